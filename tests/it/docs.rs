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
fn man_page_is_current() {
    check_generated(&["man"], "man/certroll.1");
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
