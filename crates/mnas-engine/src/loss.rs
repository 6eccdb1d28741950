//! Softmax cross-entropy with label smoothing, averaged over the batch, and its gradient.

/// The loss of one batch.
#[derive(Debug, Clone)]
pub struct LossOut {
    pub loss: f64,
    /// d loss / d logits, `n x classes`.
    pub dlogits: Vec<f32>,
    /// Rows whose largest logit is the label's.
    pub correct: usize,
}

/// `(1 - eps) * NLL + eps * mean_c(-log p_c)`, PyTorch's `CrossEntropyLoss(label_smoothing=eps)`.
pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize, smoothing: f64) -> LossOut {
    let n = labels.len();
    let mut dlogits = vec![0f32; logits.len()];
    let (mut total, mut correct) = (0f64, 0usize);
    for (b, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let log_z = max + sum.ln();
        let label = label as usize;
        let nll = log_z - row[label] as f64;
        let mean_neg_logp = log_z - row.iter().map(|&v| v as f64).sum::<f64>() / classes as f64;
        total += (1.0 - smoothing) * nll + smoothing * mean_neg_logp;
        let best = row.iter().enumerate().fold(0, |bi, (i, &v)| if v > row[bi] { i } else { bi });
        correct += usize::from(best == label && row.iter().filter(|&&v| v == row[label]).count() == 1);
        for (c, d) in dlogits[b * classes..(b + 1) * classes].iter_mut().enumerate() {
            let p = (row[c] as f64 - log_z).exp();
            let target = smoothing / classes as f64 + if c == label { 1.0 - smoothing } else { 0.0 };
            *d = ((p - target) / n as f64) as f32;
        }
    }
    LossOut { loss: total / n.max(1) as f64, dlogits, correct }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_central_differences() {
        let logits = [0.5f32, -1.0, 2.0, 0.1, 0.3, 0.2, -0.4, 1.5];
        let labels = [2u32, 3];
        let out = cross_entropy(&logits, &labels, 4, 0.1);
        for i in 0..logits.len() {
            let mut up = logits;
            up[i] += 1e-3;
            let mut down = logits;
            down[i] -= 1e-3;
            let numeric =
                (cross_entropy(&up, &labels, 4, 0.1).loss - cross_entropy(&down, &labels, 4, 0.1).loss) / 2e-3;
            assert!((numeric - out.dlogits[i] as f64).abs() < 1e-4, "{i}: {numeric} vs {}", out.dlogits[i]);
        }
        assert_eq!(out.correct, 2);
        // Uniform logits: the loss is ln(classes) whatever the smoothing.
        let flat = cross_entropy(&[0.0; 4], &[1], 4, 0.3);
        assert!((flat.loss - 4f64.ln()).abs() < 1e-12);
        assert_eq!(flat.correct, 0, "a tie is not a correct prediction");
    }
}
