use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Space(#[from] mnas_space::SpaceError),
    #[error("the network has no tensor named `{0}`")]
    UnknownTensor(String),
    #[error("tensor `{name}` holds {expected} values, got {got}")]
    TensorSize { name: String, expected: usize, got: usize },
    #[error("input of {got} values does not match {n} images of {size}x{size}x3")]
    Input { got: usize, n: usize, size: usize },
    #[error("invalid training setting: {0}")]
    Config(String),
}
