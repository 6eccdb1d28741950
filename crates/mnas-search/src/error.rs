use thiserror::Error;

#[derive(Debug, Error)]
pub enum SearchError {
    /// A user-supplied setting is out of range; the message names it.
    #[error("{0}")]
    Config(String),
    #[error("trial store {path}: {message}")]
    Store { path: String, message: String },
    /// The run directory cannot be used: missing, not a run, or held by another process.
    #[error("run {dir}: {message}")]
    Run { dir: String, message: String },
    #[error("strategy state: {0}")]
    State(String),
    /// A strategy failed (an error or a panic inside it); the trials so far are stored.
    #[error("{0}")]
    Strategy(String),
    #[error(transparent)]
    Space(#[from] mnas_space::SpaceError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;
