//! The hangar nodes that serve one repository (`--advertise`, `--peer`,
//! `--peers FILE`), so a query's endpoints can name them: endpoint `i` lists
//! every node, starting from node `i mod N`, and a client that reads all
//! endpoints at once pulls from every node at once (each location list also
//! says where to retry). With no peers, endpoints carry no location, as in the
//! cookbook: "redeem the ticket where you got it".
//!
//! Nodes hold no state of their own (the repository is shared), so the list
//! is only advice to clients; the peers file is re-read on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::cli::connect::ServerUri;
use crate::error::{Error, Result};

/// Peers named in one file at most; the file is read whole.
const MAX_PEERS: usize = 256;
const MAX_PEERS_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub struct Nodes {
    /// This node's address as clients reach it.
    advertise: String,
    /// `--peer` flags, kept across reloads of the file.
    fixed: Vec<String>,
    file: Option<PathBuf>,
    /// This node first, then the peers, without repeats.
    all: RwLock<Vec<String>>,
}

impl Nodes {
    /// `advertise` is this node; `peers` and the file's lines are the others.
    pub fn new(advertise: String, peers: Vec<String>, file: Option<PathBuf>) -> Result<Nodes> {
        let nodes = Nodes {
            advertise,
            fixed: peers,
            file,
            all: RwLock::new(Vec::new()),
        };
        nodes.reload()?;
        Ok(nodes)
    }

    /// Re-reads the peers file (on SIGHUP); a file that fails to load keeps
    /// the previous list. Returns how many nodes there are now.
    pub fn reload(&self) -> Result<usize> {
        let mut all = vec![self.advertise.clone()];
        let from_file = match &self.file {
            Some(path) => read_peers(path)?,
            None => Vec::new(),
        };
        for peer in self.fixed.iter().chain(&from_file) {
            if !all.contains(peer) {
                all.push(peer.clone());
            }
        }
        let count = all.len();
        *self.all.write().unwrap_or_else(|e| e.into_inner()) = all;
        Ok(count)
    }

    /// Whether a peers file is to be re-read on SIGHUP.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// The nodes as they are now, for one answer: a reload in the middle of
    /// building it cannot mix two lists.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.all.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The nodes at one moment.
pub struct Snapshot(Vec<String>);

impl Snapshot {
    /// The locations of endpoint `index`: every node, starting with node
    /// `index mod N`; none while this node has no peers.
    pub fn locations(&self, index: usize) -> Vec<String> {
        let all = &self.0;
        if all.len() < 2 {
            return Vec::new();
        }
        let start = index % all.len();
        all[start..].iter().chain(&all[..start]).cloned().collect()
    }
}

/// A node's URI as given on the command line or in the file, checked and
/// written the one way clients will see it.
pub fn parse_uri(text: &str) -> std::result::Result<String, String> {
    ServerUri::parse(text.trim()).map(|uri| uri.to_string())
}

fn read_peers(path: &Path) -> Result<Vec<String>> {
    use std::io::Read as _;
    let what = || format!("reading --peers {}", path.display());
    // A FIFO or a device would block the reload (and the users file's with
    // it), and a file may grow while read: regular files only, read bounded.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(what(), e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "--peers {} is not a regular file",
            path.display()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_PEERS_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| Error::io(what(), e))?;
    if text.len() as u64 > MAX_PEERS_FILE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "--peers {} is larger than {MAX_PEERS_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let mut peers = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let uri = parse_uri(line).map_err(|e| {
            Error::InvalidArgument(format!(
                "--peers {} line {}: {e}",
                path.display(),
                number + 1
            ))
        })?;
        peers.push(uri);
    }
    if peers.len() > MAX_PEERS {
        return Err(Error::InvalidArgument(format!(
            "--peers {} names {} nodes; at most {MAX_PEERS}",
            path.display(),
            peers.len()
        )));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_start_at_successive_nodes_and_list_them_all() {
        let nodes = Nodes::new(
            "grpc://a:1".into(),
            vec![
                "grpc://b:1".into(),
                "grpc://a:1".into(),
                "grpc://c:1".into(),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            nodes.snapshot().locations(0),
            ["grpc://a:1", "grpc://b:1", "grpc://c:1"]
        );
        assert_eq!(
            nodes.snapshot().locations(1),
            ["grpc://b:1", "grpc://c:1", "grpc://a:1"]
        );
        assert_eq!(
            nodes.snapshot().locations(5),
            ["grpc://c:1", "grpc://a:1", "grpc://b:1"]
        );
    }

    #[test]
    fn without_peers_there_are_no_locations() {
        let nodes = Nodes::new("grpc://a:1".into(), vec![], None).unwrap();
        assert!(nodes.snapshot().locations(0).is_empty());
    }

    #[test]
    fn the_peers_file_is_read_with_comments_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        std::fs::write(&path, "# the others\ngrpc://b:2\n\n grpc://c:3  # rack 2\n").unwrap();
        let nodes = Nodes::new("grpc://a:1".into(), vec![], Some(path.clone())).unwrap();
        assert_eq!(
            nodes.snapshot().locations(0),
            ["grpc://a:1", "grpc://b:2", "grpc://c:3"]
        );
        std::fs::write(&path, "grpc://b:2\nnot a uri\n").unwrap();
        let err = nodes.reload().unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        // The previous list stays in force.
        assert_eq!(
            nodes.snapshot().locations(1),
            ["grpc://b:2", "grpc://c:3", "grpc://a:1"]
        );
        std::fs::write(&path, "").unwrap();
        assert_eq!(nodes.reload().unwrap(), 1);
        assert!(nodes.snapshot().locations(0).is_empty());
    }
}
