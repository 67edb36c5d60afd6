//! One module per subcommand. Each exposes its clap arguments and an async `run` returning
//! the process exit code.

pub(crate) mod serve;
