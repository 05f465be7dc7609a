//! The commands that change data on the server through actions: `rm` (the
//! cookbook's `drop_dataset`) and `action`, any action by name.

use std::io::{Read, Write};

use prost::bytes::Bytes;

use super::connect::Connector;
use super::Failure;
use crate::proto::Action;

/// `hangar rm NAME`: the `drop_dataset` action of hangar and the cookbook.
pub async fn rm(connector: &mut Connector, name: &str, quiet: bool) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let action = Action {
        r#type: "drop_dataset".into(),
        body: Bytes::from(name.as_bytes().to_vec()),
    };
    let mut results = client.do_action(action).await?.into_inner();
    while results.message().await?.is_some() {}
    if !quiet {
        eprintln!("hangar: removed '{name}'");
    }
    Ok(())
}

/// `hangar action TYPE [BODY]`: each result's body on stdout, then a newline.
pub async fn action(
    connector: &mut Connector,
    kind: &str,
    body: Option<String>,
) -> Result<(), Failure> {
    let body = match body.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::io("reading the action body from stdin", e))?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut client = connector.main().await?;
    let action = Action {
        r#type: kind.to_string(),
        body: Bytes::from(body),
    };
    let mut results = client.do_action(action).await?.into_inner();
    while let Some(result) = results.message().await? {
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(&result.body)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure::io("writing to stdout", e)),
            Ok(()) => {}
        }
    }
    Ok(())
}
