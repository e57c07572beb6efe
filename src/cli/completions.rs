//! `completions` and `man`.

use clap::Args;

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn exec(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = super::command();
    // clap_complete panics when its writer fails (a closed pipe, as in `| head -1`); the script
    // is written whole to memory first so a write error is an error, which `cli::main` treats
    // as the reader having gone away.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "certroll", &mut script);
    std::io::Write::write_all(&mut crate::output::stdout(), &script)?;
    Ok(0)
}

pub fn man() -> anyhow::Result<u8> {
    clap_mangen::Man::new(super::command()).render(&mut crate::output::stdout())?;
    Ok(0)
}
