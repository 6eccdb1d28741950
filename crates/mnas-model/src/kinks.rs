//! Parity-test support for the kinks of ReLU/ReLU6.
//!
//! A pre-activation that lies within fp32 rounding of a kink (0, or 6 for ReLU6) can land on either
//! side in two correct implementations, and the side decides whether gradient flows through that
//! element. When this module is armed (only by the parity check, on the current thread), every
//! activation records such near-kink elements and can be told to take the other side for chosen
//! ones, so a comparison can resolve those ties the way the reference did. Disarmed, `activate`
//! pays one thread-local lookup.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// (activation call number within the forward pass, flat element index)
pub type KinkSite = (usize, usize);

/// A near-kink site and its distance to the kink relative to its tensor's largest magnitude.
pub type NearKink = (KinkSite, f64);

struct State {
    relative_tol: f64,
    call: usize,
    near: Vec<NearKink>,
    flips: BTreeSet<KinkSite>,
    probes: Vec<Box<dyn Any>>,
}

/// What an armed forward pass saw: near-kink sites, and per activation call a zero "probe"
/// tensor added to its output, whose gradient is the gradient flowing into that activation.
pub struct Recording {
    pub near: Vec<NearKink>,
    pub probes: Vec<Box<dyn Any>>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Arms recording for the next forward pass on this thread; `flips` take the other side of the kink.
pub fn arm(relative_tol: f64, flips: BTreeSet<KinkSite>) {
    STATE
        .with(|s| *s.borrow_mut() = Some(State { relative_tol, call: 0, near: Vec::new(), flips, probes: Vec::new() }));
}

/// Disarms and returns what the forward pass since `arm` recorded.
pub fn disarm() -> Recording {
    STATE.with(|s| match s.borrow_mut().take() {
        Some(st) => Recording { near: st.near, probes: st.probes },
        None => Recording { near: Vec::new(), probes: Vec::new() },
    })
}

pub(crate) fn push_probe(probe: Box<dyn Any>) {
    STATE.with(|s| {
        if let Some(st) = s.borrow_mut().as_mut() {
            st.probes.push(probe);
        }
    });
}

pub(crate) fn armed() -> bool {
    STATE.with(|s| s.borrow().is_some())
}

/// Masks for an armed activation: (pass-through mask, saturated mask), with the flips applied.
/// `upper` is the ReLU6 saturation point, if any.
pub(crate) fn masks(values: &[f32], upper: Option<f32>) -> (Vec<f32>, Vec<f32>) {
    STATE.with(|s| {
        let mut guard = s.borrow_mut();
        let st = guard.as_mut().expect("armed");
        let call = st.call;
        st.call += 1;
        let scale = values.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let tol = (st.relative_tol * scale) as f32;
        let mut pass = Vec::with_capacity(values.len());
        let mut sat = Vec::with_capacity(values.len());
        for (i, &v) in values.iter().enumerate() {
            let near_zero = v.abs() <= tol;
            let near_top = upper.is_some_and(|u| (v - u).abs() <= tol);
            let flip = if near_zero || near_top {
                let distance = if near_zero { v.abs() } else { (v - upper.unwrap_or(0.0)).abs() };
                st.near.push(((call, i), distance as f64 / scale.max(f64::MIN_POSITIVE)));
                st.flips.contains(&(call, i))
            } else {
                false
            };
            let above_zero = (v > 0.0) != (flip && near_zero);
            let above_top = upper.is_some_and(|u| (v >= u) != (flip && near_top));
            pass.push(if above_zero && !above_top { 1.0 } else { 0.0 });
            sat.push(if above_top { 1.0 } else { 0.0 });
        }
        (pass, sat)
    })
}
