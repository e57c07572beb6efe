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
    clap_complete::generate(args.shell, &mut cmd, "certroll", &mut crate::output::stdout());
    Ok(0)
}

pub fn man() -> anyhow::Result<u8> {
    clap_mangen::Man::new(super::command()).render(&mut crate::output::stdout())?;
    Ok(0)
}
