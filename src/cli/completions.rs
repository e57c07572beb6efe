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

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write certroll.1 and one page per verb (certroll-issue.1, certroll-vault-list.1, ...)
    /// into this existing folder instead of printing certroll.1, e.g.
    /// `certroll man --dir /usr/local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

pub fn man(args: ManArgs) -> anyhow::Result<u8> {
    let pages = man_pages()?;
    let Some(dir) = args.dir else {
        std::io::Write::write_all(&mut crate::output::stdout(), &pages[0].1)?;
        return Ok(0);
    };
    if !dir.is_dir() {
        return Err(crate::error::input(format!(
            "--dir {}: not an existing folder",
            dir.display()
        )));
    }
    for (name, page) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, page).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(0)
}

/// What certroll reads from the environment, for the man page: (variable, meaning).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CERTROLL_PLAN",
        "The plan file, as --plan (default certroll.toml).",
    ),
    (
        "CERTROLL_NOW",
        "Decide everything as if it were this RFC 3339 time, as --now.",
    ),
    (
        "CERTROLL_ALLOW_TIME_TRAVEL",
        "1 lets a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock, as --allow-time-travel.",
    ),
    ("CERTROLL_KEY_FILE", "The store key file, as --key-file."),
    (
        "CERTROLL_LOG",
        "A tracing filter for the log on stderr (e.g. certroll=debug), in place of -v.",
    ),
    (
        "CERTROLL_SMTP_HOST, CERTROLL_SMTP_PORT, CERTROLL_SMTP_TLS, CERTROLL_SMTP_FROM, CERTROLL_SMTP_USERNAME, CERTROLL_SMTP_PASSWORD",
        "Mail settings for notify when the plan has no [mail] section (see docs/plan.md).",
    ),
    (
        "CERTROLL_STORE_KEY",
        "The store key itself (64 hex characters), in place of the key file.",
    ),
    (
        "CERTROLL_SERVE_TOKEN",
        "serve: the bearer token of the default principal.",
    ),
    (
        "VARIABLES THE PLAN OR A FLAG NAMES",
        "Secrets are read only from the environment: --password-env VAR, the plan's password_env, sas_key_env, token_env and secret_env.",
    ),
];

/// Every man page as (file name, roff): certroll.1 first, then one page per verb and sub-verb
/// (hidden ones and `help` left out), named as the SUBCOMMANDS sections refer to them.
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut main = Vec::new();
    man.render_title(&mut main)?;
    man.render_name_section(&mut main)?;
    man.render_synopsis_section(&mut main)?;
    man.render_description_section(&mut main)?;
    man.render_options_section(&mut main)?;
    man.render_subcommands_section(&mut main)?;
    let mut roff = roff::Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in ENVIRONMENT {
        roff.control("TP", [])
            .text([roff::bold(*var)])
            .text([roff::roman(*meaning)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for line in super::EXIT_CODES.lines().skip(1) {
        let (code, meaning) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        roff.control("TP", [])
            .text([roff::bold(code)])
            .text([roff::roman(meaning.trim())]);
    }
    roff.to_writer(&mut main)?;
    man.render_version_section(&mut main)?;
    let mut pages = vec![(man.get_filename(), main)];
    fn verbs(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let man = clap_mangen::Man::new(sub.clone());
            let mut page = Vec::new();
            man.render(&mut page)?;
            pages.push((man.get_filename(), page));
            verbs(sub, pages)?;
        }
        Ok(())
    }
    verbs(&cmd, &mut pages)?;
    Ok(pages)
}
