//! One module per subcommand. Each exposes its clap arguments and an async `run` returning
//! the process exit code.

pub(crate) mod audit;
pub(crate) mod eval;
pub(crate) mod guard;
pub(crate) mod promote;
pub(crate) mod serve;
pub(crate) mod sim;
pub(crate) mod tokens;
pub(crate) mod top;
