//! Configuration files: `orange server --config FILE` and `orange agent --config FILE` started
//! from a file alone, flags winning over the file and the file over the environment, bad files
//! refused before anything starts; and the operator CLI's profiles switching between two real
//! servers, with flags and the environment winning over the profile.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{Agent, AgentOpts, Cli, EnrollKey, Run, Server, ServerOpts, write_secret};

/// Writes `text` to `dir/name` and returns its path.
fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `path` as a TOML string.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("a utf-8 temp path"))
}

/// A URL on 127.0.0.1 where nothing listens.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!("http://{}", listener.local_addr().expect("bound address"))
}

/// A server started with `orange server --config FILE` and nothing else on its command line: the
/// file gives the listen address, the data directory, the poll window, the enrollment key and
/// the admin token (by their files). Returns it with the directory holding the files.
fn server_from_file_only(enroll_key: &str) -> (Server, TempDir) {
    let dir = TempDir::with_prefix("orange-config-").expect("a temp dir");
    let data = dir.path().join("data");
    let key_file = write_secret(dir.path(), "enroll.key", enroll_key);
    let token_file = write_secret(dir.path(), "admin.token", "token-from-the-file");
    let config = write_file(
        dir.path(),
        "server.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata = {}\npoll_window = 2\nenroll_key_file = {}\n\
             admin_token_file = {}\n",
            toml_path(&data),
            toml_path(&key_file),
            toml_path(&token_file),
        ),
    );
    // The harness talks to it with the file's token; ORANGE_ADMIN_TOKEN names another, which
    // the file's admin_token_file wins over.
    let opts = ServerOpts {
        config: Some(config),
        data_dir: Some(data),
        enroll_key: EnrollKey::Generated,
        admin_token: Some("token-from-the-file".into()),
        env: vec![("ORANGE_ADMIN_TOKEN".into(), "token-from-the-environment".into())],
        ..ServerOpts::default()
    };
    let server = Server::start(opts);
    (server, dir)
}

/// An agent's config file: the server, app id, state directory, labels, shell tasks and the
/// enrollment key file.
fn agent_file(dir: &Path, server: &str, app_id: &str, labels: &[&str], key_file: &Path) -> PathBuf {
    let labels: Vec<String> = labels.iter().map(|label| format!("{label:?}")).collect();
    let state = dir.join(format!("state-{app_id}"));
    write_file(
        dir,
        &format!("{app_id}.toml"),
        &format!(
            "# the agent of the config file tests\nserver = {server:?}\nappid = {app_id:?}\nstate = {}\n\
             label = [{}]\nallow_shell = true\nenroll_key_file = {}\n",
            toml_path(&state),
            labels.join(", "),
            toml_path(key_file),
        ),
    )
}

/// `orange ARGS` with a clean environment, asserting it failed with a usage error (exit 2) and
/// returning its stderr.
fn refused(args: &[&str]) -> String {
    let run = Cli::new(args).deadline(Duration::from_secs(30)).run();
    assert_eq!(run.code(), Some(2), "a bad config file must be a usage error\n{run}");
    run.stderr
}

#[test]
fn a_server_and_an_agent_started_from_config_files_alone_run_a_task() {
    let (server, dir) = server_from_file_only("enroll-key-of-the-file");
    assert!(server.data_dir().is_dir(), "the data directory of the file was made");
    assert!(!server.data_dir().join("admin.token").exists(), "the token came from admin_token_file");
    let key_file = dir.path().join("enroll.key");
    let config = agent_file(dir.path(), &server.url, "web-cfg", &["role=web", "env=prod"], &key_file);
    // The harness also sets ORANGE_ENROLL_KEY to the public key, which this server refuses, and
    // ORANGE_SERVER points nowhere: the file wins over the environment.
    let opts = AgentOpts {
        config: Some(config),
        env: vec![("ORANGE_SERVER".into(), dead_url())],
        ..AgentOpts::default()
    };
    let _agent = Agent::start_online(&server, "web-cfg", opts);
    let seen = server.agent("web-cfg").expect("the agent is listed");
    assert_eq!(seen.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(seen.labels.get("env").map(String::as_str), Some("prod"));
    let run = server.operator(&["task", "run", "--appid", "web-cfg", "--", "echo from-config"]).run();
    run.assert_success();
    assert_eq!(run.stdout.trim(), "from-config", "{run}");
}

#[test]
fn a_typed_flag_wins_over_its_key_in_the_file() {
    let dir = TempDir::with_prefix("orange-config-").expect("a temp dir");
    let data = dir.path().join("data");
    // A poll window of 45 s in the file, 1 s on the command line: an idle long poll answers
    // within seconds only if the flag won.
    let config = write_file(
        dir.path(),
        "server.toml",
        &format!("listen = \"127.0.0.1:0\"\ndata = {}\npoll_window = 45\n", toml_path(&data)),
    );
    let opts = ServerOpts {
        config: Some(config),
        data_dir: Some(data),
        poll_window: Some(1),
        ..ServerOpts::default()
    };
    let server = Server::start(opts);
    let client = crate::support::register_sim(&server, "idle");
    let started = Instant::now();
    let task = client.get_task().expect("an idle poll answers");
    assert!(task.is_none(), "no task was queued");
    assert!(started.elapsed() < Duration::from_secs(20), "the poll took {:?}", started.elapsed());

    // A repeatable flag typed replaces the file's list.
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        &format!(
            "server = {:?}\nappid = \"labelled\"\nstate = {}\nlabel = [\"tier=file\"]\n",
            server.url,
            toml_path(&dir.path().join("agent-state")),
        ),
    );
    let opts =
        AgentOpts { config: Some(agent_config), labels: vec!["role=flag".into()], ..AgentOpts::default() };
    let _agent = Agent::start_online(&server, "labelled", opts);
    let seen = server.agent("labelled").expect("the agent is listed");
    let labels: Vec<(&str, &str)> = seen.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("role", "flag")], "the typed --label replaces the file's list");
}

#[test]
fn an_unknown_key_is_refused_naming_key_and_file_and_nothing_starts() {
    let dir = TempDir::with_prefix("orange-config-").expect("a temp dir");
    let data = dir.path().join("data");
    let config = write_file(
        dir.path(),
        "server.toml",
        &format!("listen = \"127.0.0.1:0\"\ndata = {}\npoll_windw = 5\n", toml_path(&data)),
    );
    let file = config.to_str().expect("a utf-8 temp path");
    let stderr = refused(&["server", "--config", file]);
    assert!(stderr.contains(&format!("config file {file}")), "{stderr}");
    assert!(stderr.contains("unknown key \"poll_windw\"; did you mean \"poll_window\"?"), "{stderr}");
    assert!(!data.exists(), "the server started: {} was created", data.display());

    let config = write_file(dir.path(), "agent.toml", "server = \"http://127.0.0.1:1\"\nallow_shel = true\n");
    let file = config.to_str().expect("a utf-8 temp path");
    let stderr = refused(&["agent", "--config", file]);
    assert!(
        stderr.contains(&format!(
            "config file {file}: unknown key \"allow_shel\"; did you mean \"allow_shell\"?"
        )),
        "{stderr}"
    );
}

#[test]
fn a_secret_given_as_a_value_is_refused_naming_the_file_key() {
    let dir = TempDir::with_prefix("orange-config-").expect("a temp dir");
    let server = write_file(dir.path(), "server.toml", "data = \"/tmp/x\"\nadmin_token = \"s3cret-admin\"\n");
    let stderr = refused(&["server", "--config", server.to_str().expect("a utf-8 temp path")]);
    assert!(stderr.contains("key \"admin_token\" would hold a secret"), "{stderr}");
    assert!(stderr.contains("name that file with admin_token_file"), "{stderr}");
    assert!(!stderr.contains("s3cret-admin"), "{stderr}");
    let agent = write_file(dir.path(), "agent.toml", "enroll_key = \"s3cret-key\"\n");
    let stderr = refused(&["agent", "--config", agent.to_str().expect("a utf-8 temp path")]);
    assert!(
        stderr.contains("name that file with enroll_key_file") && !stderr.contains("s3cret-key"),
        "{stderr}"
    );
}

#[test]
fn values_of_the_wrong_type_and_broken_files_are_refused_naming_key_and_file() {
    let dir = TempDir::with_prefix("orange-config-").expect("a temp dir");
    let cases = [
        ("server", "poll_window = \"20\"\n", "key \"poll_window\" must be a whole number, not a string"),
        ("server", "metrics_public = 1\n", "key \"metrics_public\" must be true or false, not an integer"),
        ("agent", "label = \"role=web\"\n", "key \"label\" must be a list, like label = [...], not a string"),
        ("agent", "max_tasks = 1\nmax_tasks = 2\n", "is not valid TOML"),
    ];
    for (at, (command, text, needle)) in cases.into_iter().enumerate() {
        let file = write_file(dir.path(), &format!("case-{at}.toml"), text);
        let path = file.to_str().expect("a utf-8 temp path");
        let stderr = refused(&[command, "--config", path]);
        assert!(stderr.contains(path) && stderr.contains(needle), "{command} {text:?}: {stderr}");
    }
    let missing = dir.path().join("missing.toml");
    let stderr = refused(&["server", "--config", missing.to_str().expect("a utf-8 temp path")]);
    assert!(stderr.contains(&format!("cannot read config file {}", missing.display())), "{stderr}");
    // A value the flag's own check refuses after parsing names the file too.
    let window = write_file(dir.path(), "window.toml", "data = \"/tmp/x\"\npoll_window = 99\n");
    let run = Cli::new(["server", "--config", window.to_str().expect("a utf-8 temp path")]).run();
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains(&format!("with config file {}", window.display())), "{run}");
    assert!(run.stderr.contains("--poll-window 99 must be between 1 and 50 seconds"), "{run}");
}

/// Two servers, each with a shell agent `web` and its own admin token, and a configuration home
/// whose profiles `a` and `b` name them (`a` the default).
struct TwoServers {
    a: Server,
    b: Server,
    _agents: (Agent, Agent),
    home: TempDir,
}

impl TwoServers {
    fn start() -> TwoServers {
        let a = Server::start(ServerOpts {
            admin_token: Some("token-of-a".into()),
            ..ServerOpts::poll_window(2)
        });
        let b = Server::start(ServerOpts {
            admin_token: Some("token-of-b".into()),
            ..ServerOpts::poll_window(2)
        });
        let agents = (
            Agent::start_online(&a, "web", AgentOpts::shell()),
            Agent::start_online(&b, "web", AgentOpts::shell()),
        );
        let home = TempDir::with_prefix("orange-home-").expect("a temp dir");
        let dir = home.path().join("orange");
        std::fs::create_dir_all(&dir).expect("create the config dir");
        write_secret(&dir, "a.token", "token-of-a\n");
        write_secret(&dir, "b.token", "token-of-b\n");
        let profiles = format!(
            "default_profile = \"a\"\n\n[profiles.a]\nserver = {:?}\ntoken_file = \"a.token\"\n\n\
             [profiles.b]\nserver = {:?}\ntoken_file = {}\n",
            a.url,
            b.url,
            toml_path(&dir.join("b.token")),
        );
        write_file(&dir, "config.toml", &profiles);
        TwoServers { a, b, _agents: agents, home }
    }

    /// `orange task run --appid web ARGS -- echo WORD` with this configuration home and `env`.
    fn run(&self, args: &[&str], env: &[(&str, &str)], word: &str) -> Run {
        let mut all = vec!["task", "run", "--appid", "web"];
        all.extend_from_slice(args);
        let command = format!("echo {word}");
        all.extend(["--", command.as_str()]);
        let home = self.home.path().to_str().expect("a utf-8 temp path");
        let cli = Cli::new(all).env("XDG_CONFIG_HOME", home).env("HOME", "/nonexistent");
        env.iter().fold(cli, |cli, (name, value)| cli.env(name, value)).run()
    }

    /// Asserts the task that echoed `word` ran on exactly one server, the one `on_a` says.
    fn assert_ran_on(&self, word: &str, on_a: bool, run: &Run) {
        run.assert_success();
        assert_eq!(run.stdout.trim(), word, "{run}");
        let echoed =
            |server: &Server| server.tasks().iter().any(|task| task.payload == format!("echo {word}"));
        assert_eq!((echoed(&self.a), echoed(&self.b)), (on_a, !on_a), "{word}: {run}");
    }
}

#[test]
fn profiles_pick_the_server_and_token_and_flags_and_environment_win() {
    let two = TwoServers::start();
    let run = two.run(&[], &[], "by-default");
    two.assert_ran_on("by-default", true, &run);
    let run = two.run(&["--profile", "b"], &[], "flag-b");
    two.assert_ran_on("flag-b", false, &run);
    let run = two.run(&[], &[("ORANGE_PROFILE", "b")], "env-b");
    two.assert_ran_on("env-b", false, &run);
    let run = two.run(&["--profile", "a"], &[("ORANGE_PROFILE", "b")], "flag-beats-env");
    two.assert_ran_on("flag-beats-env", true, &run);
    // Explicit connection settings win over the profile: --server and ORANGE_TOKEN name A
    // while ORANGE_PROFILE names B.
    let env = [("ORANGE_PROFILE", "b"), ("ORANGE_TOKEN", "token-of-a")];
    let run = two.run(&["--server", &two.a.url], &env, "explicit-server");
    two.assert_ran_on("explicit-server", true, &run);
    // Without ORANGE_TOKEN the token is still profile b's, which A refuses: the profile's
    // token is what reached B above.
    let run = two.run(&["--server", &two.a.url], &[("ORANGE_PROFILE", "b")], "wrong-token");
    assert_eq!(run.code(), Some(255), "{run}");
    assert!(run.stderr.contains("refused the admin token"), "{run}");
}

#[test]
fn an_unknown_profile_is_refused_listing_the_known_ones() {
    let two = TwoServers::start();
    let run = two.run(&["--profile", "qa"], &[], "nowhere");
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("has no profile \"qa\"; its profiles: a, b"), "{run}");
    let tasks = two.a.tasks().len() + two.b.tasks().len();
    assert_eq!(tasks, 0, "nothing was sent");
    // Any operator command takes --profile: here `orange agents`.
    let home = two.home.path().to_str().expect("a utf-8 temp path");
    let run = Cli::new(["agents", "--profile", "b", "--json"]).env("XDG_CONFIG_HOME", home).run();
    run.assert_success();
    assert!(run.stdout.contains("\"web\""), "{run}");
}
