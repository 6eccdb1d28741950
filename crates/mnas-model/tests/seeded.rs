//! Seeded construction gives the same weights whatever other threads build at the same time
//! (burn keeps one RNG per process).

use mnas_model::backend::Cpu;
use mnas_model::weights::visit;
use mnas_model::MnasNet;
use mnas_space::parse_block_list;

fn weights(m: &MnasNet<Cpu>) -> Vec<f32> {
    let mut all = Vec::new();
    visit(m, |_, slot| all.extend(slot.to_vec()));
    all
}

#[test]
fn seeded_models_are_the_same_while_other_threads_build() {
    let mut arch =
        parse_block_list("stem16 ir_r2_k3_s2_e3_c24_se0.25 cn_r1_k3_s1_c32 head64").expect("valid block list");
    arch.num_classes = 10;
    let device = Default::default();
    let want = weights(&MnasNet::<Cpu>::seeded(&arch, &device, 7).expect("valid arch"));
    let other_seed = weights(&MnasNet::<Cpu>::seeded(&arch, &device, 8).expect("valid arch"));
    assert_ne!(want, other_seed, "the seed must matter, or this test proves nothing");
    let mismatches = std::thread::scope(|s| {
        // Unseeded builds and builds with other seeds, racing the seeded ones.
        for t in 0..2u64 {
            let arch = &arch;
            s.spawn(move || {
                for i in 0..40 {
                    let d = Default::default();
                    let _ = if i % 2 == 0 {
                        MnasNet::<Cpu>::new(arch, &d)
                    } else {
                        MnasNet::<Cpu>::seeded(arch, &d, 100 + t)
                    };
                }
            });
        }
        let seeded: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..40)
                        .filter(|_| {
                            weights(&MnasNet::<Cpu>::seeded(&arch, &Default::default(), 7).expect("valid arch")) != want
                        })
                        .count()
                })
            })
            .collect();
        seeded.into_iter().map(|h| h.join().expect("builder thread")).sum::<usize>()
    });
    assert_eq!(mismatches, 0, "seeded builds that drew other weights");
}
