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

/// The fenced block after each `<!-- rehearsal: FILE -->` marker of docs/plan.md, by file.
fn rehearsal_blocks() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plan.md"))
        .unwrap();
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("<!-- rehearsal: ") {
        rest = &rest[i + "<!-- rehearsal: ".len()..];
        let (file, after) = rest.split_once(" -->").unwrap();
        let fence = after.find("```").unwrap();
        let body = &after[fence..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let end = body.find("\n```").unwrap();
        blocks.push((file.to_string(), format!("{}\n", &body[..end])));
        rest = &body[end..];
    }
    blocks
}

/// docs/plan.md's rehearsal on `certroll serve` is run as written (serve's plan, the azure plan,
/// the device hook and the shell session), on a free port instead of 8443: a setup the docs
/// describe that stops working fails here.
#[test]
fn docs_plan_md_rehearsal_on_serve_runs_as_written() {
    let blocks = rehearsal_blocks();
    let files: Vec<&str> = blocks.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        ["serve/plan.toml", "certroll.toml", "device-hook.sh", "run.sh"]
    );
    for tool in ["jq", "curl", "openssl", "bash"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "the rehearsal needs `{tool}` on PATH");
    }
    let env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(env.path("serve")).unwrap();
    for (file, text) in &blocks {
        env.write(file, &text.replace("8443", &port.to_string()));
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_certroll"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["300", "bash", "run.sh"])
        .current_dir(env.dir.path())
        .env("PATH", path);
    for (k, _) in std::env::vars() {
        if k.starts_with("CERTROLL_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let serve_log = std::fs::read_to_string(env.path("serve.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "run.sh failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserve.log:\n{serve_log}"
    );
    // The id scope the docs give is the one serve prints.
    let start: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("serve-start.json")).unwrap()).unwrap();
    assert_eq!(start["id_scope"], "0neF3DBCA55", "{start}");
    // The start line holds every SAS key: the rehearsal leaves it readable by its user alone
    // (trial az9 G7).
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(env.path("serve-start.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "serve-start.json is {mode:o}");
    // Every device registered through the hook, and the roll went through.
    for dev in ["sensor-1", "sensor-2", "sensor-3", "gateway-01"] {
        assert!(
            env.path(&format!("devices/{dev}.pem")).exists(),
            "{dev} got no certificate\n{stdout}\n{stderr}"
        );
    }
    let assigned = stdout
        .lines()
        .filter(|l| l.contains(" assigned ") && l.contains("example-hub"))
        .count();
    assert_eq!(assigned, 4, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[done] group:sensors: roll 3 device(s)"),
        "{stdout}\n{stderr}"
    );
    // The session's trap stopped serve: nothing answers on the port any more.
    // (SIGTERM: serve finishes what is in flight, so it may take a moment.)
    let stopped = (0..100).any(|_| {
        let closed = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
        if !closed {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        closed
    });
    assert!(stopped, "serve still runs after the session");
}

/// The first column of the table after `<!-- {marker} -->` in docs/plan.md, without backticks.
fn doc_table_names(marker: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plan.md"))
        .unwrap();
    let at = doc
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("docs/plan.md has no `<!-- {marker} -->` table"));
    doc[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.split('|').nth(1).unwrap().trim().trim_matches('`').to_string())
        .collect()
}

/// The names a refusal of `certroll validate` lists after `expected one of`.
fn expected_names(env: &TestEnv, plan: &str) -> Vec<String> {
    env.write("plan.toml", plan);
    let r = env.plan_run(&["validate"]).code(2);
    let (_, list) = r
        .stderr
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{}", r.stderr));
    list.trim()
        .trim_matches(['(', ')'])
        .split(", ")
        .map(|n| n.trim().trim_matches('`').to_string())
        .collect()
}

/// docs/plan.md's reference tables of `[serve.services.SERVICE]` name exactly the services and
/// the keys the plan accepts (second trial of issue 12: the docs named neither, and `vault` was
/// the first guess), and the TOML trap it warns of is what the plan does.
#[test]
fn docs_plan_md_lists_exactly_the_serve_services_and_their_keys() {
    let env = TestEnv::new();
    let services = expected_names(&env, "version = 1\n[serve.services.vault]\nrate_per_second = 1\n");
    assert_eq!(doc_table_names("serve-services"), services);
    let keys = expected_names(&env, "version = 1\n[serve.services.keyvault]\nbogus = 1\n");
    assert_eq!(doc_table_names("serve-service-keys"), keys);
    for service in &services {
        let plan: String = keys
            .iter()
            .map(|k| match k.as_str() {
                "error_status" => "error_status = 500\n".to_string(),
                k => format!("{k} = 1\n"),
            })
            .collect();
        env.write(
            "plan.toml",
            &format!("version = 1\n[serve.services.{service}]\n{plan}"),
        );
        env.plan_run(&["validate"]).ok();
    }
    // `[serve]`'s own keys after a services table belong to that table.
    env.write(
        "plan.toml",
        "version = 1\n[serve]\nvault = \"vone\"\n[serve.services.dps]\nrate_per_second = 1\ndps = \"other-dps\"\n",
    );
    let r = env.plan_run(&["validate"]).code(2);
    assert!(r.stderr.contains("unknown field `dps`"), "{}", r.stderr);
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation other than `-` and `_`
/// dropped (so "Rehearsing on `certroll serve` (complete, copy-paste)" is
/// `rehearsing-on-certroll-serve-complete-copy-paste`).
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every link into docs/plan.md (its own `](#...)` and the README's `docs/plan.md#...`) reaches
/// one of its headings: the incident runbooks send an operator to other sections, and a heading
/// renamed under them would leave the link dead at the moment it is needed.
#[test]
fn links_into_docs_plan_md_reach_a_heading() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/plan.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            anchors.push(heading_anchor(line.trim_start_matches('#')));
        }
    }
    assert!(anchors.iter().any(|a| a == "incident-runbooks"), "{anchors:?}");
    let links = |text: &str, prefix: &str| -> Vec<String> {
        text.split(prefix)
            .skip(1)
            .map(|rest| rest[..rest.find(')').unwrap()].to_string())
            .collect()
    };
    let mut checked = 0;
    for (file, link) in links(&doc, "](#").into_iter().map(|l| ("docs/plan.md", l)).chain(
        links(&readme, "docs/plan.md#")
            .into_iter()
            .map(|l| ("README.md", l)),
    ) {
        assert!(
            anchors.contains(&link),
            "{file} links to docs/plan.md#{link}, which no heading of docs/plan.md makes"
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} links found");
}
