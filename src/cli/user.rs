//! `hangar user`: manage the users file that `hangar serve --users` reads.
//! Works on the file only; a running server picks changes up on SIGHUP.

use std::path::PathBuf;

use crate::auth::{Role, Users};
use crate::error::{Error, Result};

/// One `hangar user` subcommand, parsed.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Add {
        users: PathBuf,
        name: String,
        role: Role,
    },
    Passwd {
        users: PathBuf,
        name: String,
    },
    Remove {
        users: PathBuf,
        name: String,
    },
    List {
        users: PathBuf,
    },
}

/// Runs the command; messages go to stderr, `list` prints to stdout.
pub fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add { users, name, role } => {
            let mut file = match Users::load(&users) {
                Ok(file) => file,
                // The first 'add' creates the file.
                Err(Error::NotFound(_)) => Users::default(),
                Err(err) => return Err(err),
            };
            if file.get(&name).is_some() {
                return Err(Error::AlreadyExists(format!(
                    "user '{name}' already exists in {}",
                    users.display()
                )));
            }
            let password = read_password(&name)?;
            file.add(&name, role, &password)?;
            file.save(&users)?;
            eprintln!(
                "added user '{name}' with role '{role}' to {}",
                users.display()
            );
        }
        UserCommand::Passwd { users, name } => {
            let mut file = Users::load(&users)?;
            if file.get(&name).is_none() {
                return Err(Error::NotFound(format!(
                    "user '{name}' does not exist in {}",
                    users.display()
                )));
            }
            let password = read_password(&name)?;
            file.set_password(&name, &password)?;
            file.save(&users)?;
            eprintln!(
                "changed the password of '{name}' in {} (a running server revokes its \
                 tokens on SIGHUP)",
                users.display()
            );
        }
        UserCommand::Remove { users, name } => {
            let mut file = Users::load(&users)?;
            file.remove(&name)?;
            file.save(&users)?;
            eprintln!(
                "removed user '{name}' from {} (a running server forgets it on SIGHUP)",
                users.display()
            );
        }
        UserCommand::List { users } => {
            let file = Users::load(&users)?;
            for user in file.iter() {
                println!("{}\t{}", user.name, user.role);
            }
        }
    }
    Ok(())
}

/// The password: prompted twice without echo on a terminal, else one line of
/// stdin (for scripts).
fn read_password(name: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let io_err = |e: std::io::Error| Error::io("reading the password", e);
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first =
            rpassword::prompt_password(format!("password for '{name}': ")).map_err(io_err)?;
        let again = rpassword::prompt_password("again: ").map_err(io_err)?;
        if first != again {
            return Err(Error::InvalidArgument("the passwords do not match".into()));
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(io_err)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Error::InvalidArgument(
            "no password on stdin (expected one line)".into(),
        ));
    }
    Ok(password)
}
