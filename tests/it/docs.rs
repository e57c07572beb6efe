//! Generated files that must match the binary: completions and the man page. Run with
//! `CERTROLL_UPDATE_GENERATED=1` to rewrite them after changing the command line.

use crate::util::*;

fn check_generated(args: &[&str], file: &str) {
    let env = TestEnv::new();
    let out = env.run(args).ok().stdout;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("CERTROLL_UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == out,
        "{file} is out of date: run CERTROLL_UPDATE_GENERATED=1 cargo test --test it docs"
    );
}

#[test]
fn completions_are_current() {
    check_generated(&["completions", "bash"], "completions/certroll.bash");
    check_generated(&["completions", "zsh"], "completions/_certroll");
    check_generated(&["completions", "fish"], "completions/certroll.fish");
}

#[test]
fn man_pages_are_current() {
    check_generated(&["man"], "man/certroll.1");
    // Every page `man --dir` writes (one per verb, as certroll.1's SUBCOMMANDS name them) is
    // committed and current, and nothing else is in man/.
    let env = TestEnv::new();
    std::fs::create_dir(env.path("pages")).unwrap();
    env.run(&["man", "--dir", "pages"]).ok();
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let names = |dir: &std::path::Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let written = names(&env.path("pages"));
    assert!(written.contains("certroll-roll-secondary.1") && written.contains("certroll-vault-list.1"));
    if std::env::var_os("CERTROLL_UPDATE_GENERATED").is_some() {
        for name in names(&committed) {
            std::fs::remove_file(committed.join(name)).unwrap();
        }
        for name in &written {
            std::fs::copy(env.path("pages").join(name), committed.join(name)).unwrap();
        }
    }
    assert_eq!(
        written,
        names(&committed),
        "man/ differs: run CERTROLL_UPDATE_GENERATED=1 cargo test --test it docs"
    );
    for name in &written {
        assert_eq!(
            std::fs::read(env.path("pages").join(name)).unwrap(),
            std::fs::read(committed.join(name)).unwrap(),
            "man/{name} is out of date: run CERTROLL_UPDATE_GENERATED=1 cargo test --test it docs"
        );
    }
    // The main page has the sections a man page reader looks for.
    let main = std::fs::read_to_string(committed.join("certroll.1")).unwrap();
    for section in [
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
        "CERTROLL_PLAN",
        "\\fB3\\fR",
    ] {
        assert!(main.contains(section), "certroll.1 lacks {section}");
    }
}

#[test]
fn init_writes_a_plan_that_validates_and_does_not_overwrite() {
    let env = TestEnv::new();
    env.run(&["init"]).ok();
    env.run(&["validate"]).ok();
    env.run(&["init"]).code(2);
    env.run(&["init", "--force"]).ok();
}

#[test]
fn help_lists_only_what_is_built_and_the_exit_codes() {
    let env = TestEnv::new();
    let help = env.run(&["--help"]).ok().stdout;
    for verb in ["init", "validate", "issue", "status", "export", "completions"] {
        assert!(help.contains(verb), "{verb} missing from help");
    }
    assert!(help.contains("Exit codes"));
}
