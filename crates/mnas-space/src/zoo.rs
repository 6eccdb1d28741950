//! The paper's models and their timm names, plus MobileNetV2 1.0 (the paper's baseline).

use crate::arch::{Activation, Arch};
use crate::error::SpaceError;
use crate::grammar::parse_block_list;

const A1: &str = "ds_r1_k3_s1_e1_c16_noskip ir_r2_k3_s2_e6_c24 ir_r3_k5_s2_e3_c40_se0.25 ir_r4_k3_s2_e6_c80 \
                  ir_r2_k3_s1_e6_c112_se0.25 ir_r3_k5_s2_e6_c160_se0.25 ir_r1_k3_s1_e6_c320";
const B1: &str = "ds_r1_k3_s1_c16_noskip ir_r3_k3_s2_e3_c24 ir_r3_k5_s2_e3_c40 ir_r3_k5_s2_e6_c80 \
                  ir_r2_k3_s1_e6_c96 ir_r4_k5_s2_e6_c192 ir_r1_k3_s1_e6_c320_noskip";
const SMALL: &str = "ds_r1_k3_s1_c8 ir_r1_k3_s2_e3_c16 ir_r2_k3_s2_e6_c16 ir_r4_k5_s2_e6_c32_se0.25 \
                     ir_r3_k3_s1_e6_c32_se0.25 ir_r3_k5_s2_e6_c88_se0.25 ir_r1_k3_s1_e6_c144";
const MOBILENETV2: &str = "ds_r1_k3_s1_c16 ir_r2_k3_s2_e6_c24 ir_r3_k3_s2_e6_c32 ir_r4_k3_s2_e6_c64 \
                           ir_r3_k3_s1_e6_c96 ir_r3_k3_s2_e6_c160 ir_r1_k3_s1_e6_c320";

/// Every name `lookup` accepts, for listings and error messages.
pub const MODEL_NAMES: &[&str] = &[
    "mnasnet_050",
    "mnasnet_075",
    "mnasnet_100",
    "mnasnet_140",
    "semnasnet_050",
    "semnasnet_075",
    "semnasnet_100",
    "semnasnet_140",
    "mnasnet_small",
    "mnasnet-a1",
    "mnasnet-b1",
    "mnasnet-small",
    "mobilenetv2_100",
    "mobilenetv2",
];

fn build(name: &str, blocks: &str, stem: u32, width: f64, activation: Activation, dropout: f64) -> Arch {
    let mut arch = parse_block_list(blocks).expect("zoo block strings are valid");
    arch.name = Some(name.to_string());
    arch.stem_channels = stem;
    arch.width = width;
    arch.activation = activation;
    arch.dropout = dropout;
    arch
}

/// A named model at its own width, 1000 classes, 224x224.
pub fn lookup(name: &str) -> Result<Arch, SpaceError> {
    let key = name.trim().to_ascii_lowercase();
    let relu = Activation::Relu;
    let arch = match key.as_str() {
        "mnasnet_050" => build("mnasnet_050", B1, 32, 0.5, relu, 0.2),
        "mnasnet_075" => build("mnasnet_075", B1, 32, 0.75, relu, 0.2),
        "mnasnet_100" | "mnasnet-b1" | "mnasnet_b1" => build("mnasnet_100", B1, 32, 1.0, relu, 0.2),
        "mnasnet_140" => build("mnasnet_140", B1, 32, 1.4, relu, 0.2),
        "semnasnet_050" => build("semnasnet_050", A1, 32, 0.5, relu, 0.2),
        "semnasnet_075" => build("semnasnet_075", A1, 32, 0.75, relu, 0.2),
        "semnasnet_100" | "mnasnet-a1" | "mnasnet_a1" => build("semnasnet_100", A1, 32, 1.0, relu, 0.2),
        "semnasnet_140" => build("semnasnet_140", A1, 32, 1.4, relu, 0.2),
        "mnasnet_small" | "mnasnet-small" => build("mnasnet_small", SMALL, 8, 1.0, relu, 0.0),
        "mobilenetv2_100" | "mobilenetv2" | "mobilenet-v2" | "mobilenet_v2" => {
            build("mobilenetv2_100", MOBILENETV2, 32, 1.0, Activation::Relu6, 0.2)
        }
        _ => {
            return Err(SpaceError::UnknownModel { name: name.to_string(), known: MODEL_NAMES.join(", ") });
        }
    };
    Ok(arch)
}
