//! Profiles of the operator CLI: named connection settings (server URL, admin token file, CA
//! file) in `$XDG_CONFIG_HOME/orange/config.toml`, else `~/.config/orange/config.toml`; one is
//! picked by `--profile NAME`, else `ORANGE_PROFILE`, else the file's `default_profile`. Flags
//! and the environment win over the profile: [`OperatorConfig`](super::operator::OperatorConfig)
//! applies that order. Tokens are named by path only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use super::config_file::{a_type, read_config_table, unknown_key};

/// Environment variable naming the profile when `--profile` is not given.
pub const ENV_PROFILE: &str = "ORANGE_PROFILE";
/// The profiles file, under the configuration directory (`XDG_CONFIG_HOME`, else `~/.config`).
pub const PROFILES_FILE: &str = "orange/config.toml";

/// Keys of the file's top level.
const TOP_KEYS: &[&str] = &["default_profile", "profiles"];
/// Keys of one profile.
const PROFILE_KEYS: &[&str] = &["server", "token_file", "ca_file", "insecure"];

/// The environment, passed in so that tests do not touch the real one.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One profile's settings; what it leaves out falls back to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Its name, as in `[profiles.NAME]`.
    pub name: String,
    /// `server`: the server URL.
    pub server: Option<String>,
    /// `token_file`: the file holding the admin token (`~/` is the home directory; a relative
    /// path is relative to the profiles file's directory).
    pub token_file: Option<PathBuf>,
    /// `ca_file`: PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// `insecure`: do not verify the server's certificate.
    pub insecure: Option<bool>,
}

/// The profiles file: `$XDG_CONFIG_HOME/orange/config.toml` when that is an absolute path, else
/// `$HOME/.config/orange/config.toml`; none without either.
pub fn profiles_path(env: Env) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    match set("XDG_CONFIG_HOME").map(PathBuf::from).filter(|dir| dir.is_absolute()) {
        Some(dir) => Some(dir.join(PROFILES_FILE)),
        None => set("HOME").map(|home| Path::new(&home).join(".config").join(PROFILES_FILE)),
    }
}

/// The profile to use: the one `flag` names, else `ORANGE_PROFILE`'s, else the file's
/// `default_profile`; none when nothing names one. A profile named but not found is an error
/// listing the known ones; so is a file with an unknown key or a value of the wrong type.
pub fn chosen_profile(flag: Option<&str>, env: Env) -> Result<Option<Profile>> {
    let asked = flag.map(str::to_owned).or_else(|| env(ENV_PROFILE).filter(|name| !name.trim().is_empty()));
    let Some(path) = profiles_path(env) else {
        match asked {
            Some(name) => bail!("profile {name:?} asked for, but neither XDG_CONFIG_HOME nor HOME is set"),
            None => return Ok(None),
        }
    };
    if !path.try_exists().unwrap_or(true) {
        match asked {
            Some(name) => bail!("no profile {name:?}: {} does not exist", path.display()),
            None => return Ok(None),
        }
    }
    let mut file = read_profiles(&path, env("HOME").as_deref())?;
    let Some(name) = asked.or_else(|| file.default_profile.clone()) else { return Ok(None) };
    match file.profiles.remove(&name) {
        Some(profile) => Ok(Some(profile)),
        None => Err(unknown_profile(&path, &name, &file)),
    }
}

/// The message for a profile the file does not define, listing those it does.
fn unknown_profile(path: &Path, name: &str, file: &ProfilesFile) -> anyhow::Error {
    let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
    let list = if known.is_empty() {
        "it defines none".to_owned()
    } else {
        format!("its profiles: {}", known.join(", "))
    };
    anyhow!("config file {} has no profile {name:?}; {list}", path.display())
}

/// What a profiles file says.
#[derive(Debug, Default)]
struct ProfilesFile {
    /// `default_profile`.
    default_profile: Option<String>,
    /// `[profiles.NAME]` tables by name.
    profiles: BTreeMap<String, Profile>,
}

/// Reads and checks the profiles file `path`; `home` expands `~/` in its paths.
fn read_profiles(path: &Path, home: Option<&str>) -> Result<ProfilesFile> {
    let table = read_config_table(path)?;
    let in_file = |problem: String| anyhow!("config file {}: {problem}", path.display());
    let base = Paths { dir: path.parent().unwrap_or(Path::new("/")), home };
    let mut file = ProfilesFile::default();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("default_profile", toml::Value::String(name)) => file.default_profile = Some(name),
            ("profiles", toml::Value::Table(profiles)) => {
                for (name, value) in profiles {
                    let profile = read_profile(&name, value, &base).map_err(in_file)?;
                    file.profiles.insert(name, profile);
                }
            }
            ("default_profile", other) => return Err(in_file(wrong_type(&key, "a string", &other))),
            ("profiles", other) => return Err(in_file(wrong_type(&key, "a table of profiles", &other))),
            (other, _) if PROFILE_KEYS.contains(&other) => {
                return Err(in_file(format!("key {other:?} belongs in a profile, under [profiles.NAME]")));
            }
            (other, _) => return Err(in_file(unknown_key(other, TOP_KEYS, &TOP_KEYS.join(", ")))),
        }
    }
    Ok(file)
}

/// How relative and `~/` paths of a profiles file are read.
struct Paths<'a> {
    /// The file's directory, which relative paths start from.
    dir: &'a Path,
    /// The home directory, for `~/`.
    home: Option<&'a str>,
}

impl Paths<'_> {
    /// `text` as a path: `~/x` under the home directory, a relative path under the file's.
    fn resolve(&self, text: &str) -> Result<PathBuf, String> {
        if let Some(rest) = text.strip_prefix("~/") {
            let home = self.home.ok_or_else(|| format!("{text:?} starts with ~/ but HOME is not set"))?;
            return Ok(Path::new(home).join(rest));
        }
        Ok(self.dir.join(text))
    }
}

/// The profile `[profiles.NAME]`, its keys checked.
fn read_profile(name: &str, value: toml::Value, paths: &Paths) -> Result<Profile, String> {
    let toml::Value::Table(table) = value else {
        return Err(format!("profiles.{name} must be a table ([profiles.{name}]), not {}", value.type_str()));
    };
    let mut profile = Profile { name: name.to_owned(), ..Profile::default() };
    let at = |problem: String| format!("[profiles.{name}]: {problem}");
    for (key, value) in table {
        match (key.as_str(), value) {
            ("server", toml::Value::String(url)) => profile.server = Some(url),
            ("token_file", toml::Value::String(path)) => {
                profile.token_file = Some(paths.resolve(&path).map_err(at)?)
            }
            ("ca_file", toml::Value::String(path)) => {
                profile.ca_file = Some(paths.resolve(&path).map_err(at)?)
            }
            ("insecure", toml::Value::Boolean(on)) => profile.insecure = Some(on),
            ("insecure", other) => return Err(at(wrong_type(&key, "true or false", &other))),
            ("token", _) => {
                return Err(at(
                    "key \"token\" would hold the admin token, which a config file does not take; put it in a \
                     file only you can read and name that file with token_file"
                        .to_owned(),
                ));
            }
            (known, other) if PROFILE_KEYS.contains(&known) => {
                return Err(at(wrong_type(known, "a string", &other)));
            }
            (other, _) => return Err(at(unknown_key(other, PROFILE_KEYS, &PROFILE_KEYS.join(", ")))),
        }
    }
    Ok(profile)
}

/// The message for a value of the wrong type.
fn wrong_type(key: &str, wanted: &str, value: &toml::Value) -> String {
    format!("key {key:?} must be {wanted}, not {}", a_type(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration home whose profiles file holds `text`, and the environment naming it.
    fn home_with(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join(PROFILES_FILE);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create the config dir");
        std::fs::write(&file, text).expect("write the profiles file");
        dir
    }

    fn env_for(dir: &tempfile::TempDir, profile: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let config = dir.path().to_str().expect("a utf-8 temp path").to_owned();
        let profile = profile.map(str::to_owned);
        move |name| match name {
            "XDG_CONFIG_HOME" => Some(config.clone()),
            "HOME" => Some("/home/op".to_owned()),
            ENV_PROFILE => profile.clone(),
            _ => None,
        }
    }

    const FILE: &str = r#"
default_profile = "prod"
[profiles.prod]
server = "https://orange.example.net:8890"
token_file = "~/.config/orange/prod.token"
ca_file = "/etc/orange/ca.pem"
[profiles.staging]
server = "http://10.0.0.5:8890"
token_file = "staging.token"
insecure = true
"#;

    #[test]
    fn the_flag_beats_the_environment_beats_the_default() -> Result<()> {
        let dir = home_with(FILE);
        let prod = chosen_profile(None, &env_for(&dir, None))?.expect("the default profile");
        assert_eq!(prod.name, "prod");
        assert_eq!(prod.server.as_deref(), Some("https://orange.example.net:8890"));
        assert_eq!(prod.token_file, Some(PathBuf::from("/home/op/.config/orange/prod.token")));
        assert_eq!(prod.ca_file, Some(PathBuf::from("/etc/orange/ca.pem")));
        let staging = chosen_profile(None, &env_for(&dir, Some("staging")))?.expect("the env's profile");
        assert_eq!(staging.token_file, Some(dir.path().join("orange/staging.token")));
        assert_eq!(staging.insecure, Some(true));
        let flagged = chosen_profile(Some("prod"), &env_for(&dir, Some("staging")))?.expect("the flag's");
        assert_eq!(flagged.name, "prod");
        Ok(())
    }

    #[test]
    fn no_file_or_no_default_means_no_profile_unless_one_is_asked_for() -> Result<()> {
        let empty = tempfile::tempdir()?;
        assert_eq!(chosen_profile(None, &env_for(&empty, None))?, None);
        let error = chosen_profile(Some("prod"), &env_for(&empty, None)).unwrap_err().to_string();
        assert!(error.starts_with("no profile \"prod\": ") && error.ends_with("does not exist"), "{error}");
        let dir = home_with("[profiles.a]\nserver = \"http://a:1\"\n");
        assert_eq!(chosen_profile(None, &env_for(&dir, None))?, None);
        assert_eq!(chosen_profile(None, &|_: &str| None)?, None);
        Ok(())
    }

    #[test]
    fn an_unknown_profile_lists_the_known_ones() {
        let dir = home_with(FILE);
        let error = chosen_profile(Some("qa"), &env_for(&dir, None)).unwrap_err().to_string();
        assert!(error.ends_with("has no profile \"qa\"; its profiles: prod, staging"), "{error}");
        let dir = home_with("default_profile = \"x\"\n");
        let error = chosen_profile(None, &env_for(&dir, None)).unwrap_err().to_string();
        assert!(error.ends_with("has no profile \"x\"; it defines none"), "{error}");
    }

    #[test]
    fn unknown_keys_secrets_and_wrong_types_are_refused_naming_key_and_file() {
        let refused = |text: &str| {
            let dir = home_with(text);
            let error = chosen_profile(None, &env_for(&dir, None)).unwrap_err().to_string();
            assert!(error.contains(&format!("{}", dir.path().join(PROFILES_FILE).display())), "{error}");
            error
        };
        let error = refused("[profiles.a]\nsever = \"http://a:1\"\n");
        assert!(error.contains("[profiles.a]: unknown key \"sever\"; did you mean \"server\"?"), "{error}");
        let error = refused("default_profil = \"a\"\n");
        assert!(error.contains("did you mean \"default_profile\"?"), "{error}");
        let error = refused("server = \"http://a:1\"\n");
        assert!(error.contains("belongs in a profile"), "{error}");
        let error = refused("[profiles.a]\ntoken = \"s3cret\"\n");
        assert!(error.contains("name that file with token_file") && !error.contains("s3cret"), "{error}");
        let error = refused("[profiles.a]\nserver = 8890\n");
        assert!(error.contains("key \"server\" must be a string, not an integer"), "{error}");
        let error = refused("[profiles.a]\ninsecure = \"yes\"\n");
        assert!(error.contains("key \"insecure\" must be true or false"), "{error}");
        let error = refused("profiles = 3\n");
        assert!(error.contains("key \"profiles\" must be a table of profiles"), "{error}");
        let error = refused("[profiles.a]\nserver = \"x\"\n[profiles.a]\nserver = \"y\"\n");
        assert!(error.contains("is not valid TOML"), "{error}");
    }
}
