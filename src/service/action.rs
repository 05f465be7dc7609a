//! ListActions and DoAction: the cookbook's one custom action, `drop_dataset`.

use tonic::codegen::tokio_stream;
use tonic::{Code, Request, Response, Status};

use super::{blocking, finish, name_from_bytes, BoxStream, Hangar};
use crate::auth::Operation;
use crate::error::{Error, Result};
use crate::proto::{Action, ActionType, Empty};

/// The actions DoAction understands, with the description ListActions gives:
/// the cookbook's, word for word.
const ACTIONS: &[(&str, &str)] = &[("drop_dataset", "Delete a dataset.")];

pub(super) async fn list_actions(
    service: &Hangar,
    request: Request<Empty>,
) -> Result<Response<BoxStream<ActionType>>, Status> {
    let mut call = service.call("ListActions", &request);
    let _permit = service
        .enter(&mut call, &request, Operation::ListActions)
        .await?;
    call.rows = ACTIONS.len() as u64;
    finish(call, Ok(()))?;
    let actions = ACTIONS.iter().map(|(name, description)| {
        Ok(ActionType {
            r#type: name.to_string(),
            description: description.to_string(),
        })
    });
    Ok(Response::new(Box::pin(tokio_stream::iter(actions))))
}

pub(super) async fn do_action(
    service: &Hangar,
    request: Request<Action>,
) -> Result<Response<BoxStream<crate::proto::Result>>, Status> {
    let mut call = service.call("DoAction", &request);
    let (principal, permit) = service
        .enter(&mut call, &request, Operation::DoAction)
        .await?;
    let checked = async {
        let action = request.get_ref();
        match action.r#type.as_str() {
            "drop_dataset" => {
                if let Some(principal) = &principal {
                    principal.check(Operation::DropDataset)?;
                }
                let name = name_from_bytes(&action.body, "drop_dataset body")?;
                call.dataset(&name);
                Ok(name)
            }
            // The cookbook's server raises NotImplementedError here, which
            // clients see as UNIMPLEMENTED.
            other => {
                let known: Vec<&str> = ACTIONS.iter().map(|(name, _)| *name).collect();
                Err(Error::Unimplemented(format!(
                    "unknown action '{}'; available actions: {}",
                    other.escape_debug(),
                    known.join(", ")
                )))
            }
        }
    }
    .await;
    let name = match checked {
        Ok(name) => name,
        Err(err) => return Err(call.fail(err)),
    };
    // Eagerly, before the reply stream: clients that never read the result
    // (the cookbook's) still get the drop. The drop runs in a task of its own
    // that owns the log record, so a client that leaves mid-drop cannot make
    // the log disagree with the repository.
    let store = service.store.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _permit = permit;
        let result = blocking(move || store.drop_dataset(&name)).await;
        match &result {
            Ok(()) if done_tx.is_closed() => call.finish(
                Code::Cancelled,
                "the client went away before the answer; the dataset was dropped",
            ),
            Ok(()) => call.finish(Code::Ok, ""),
            Err(err) => {
                call.fail(err.clone());
            }
        }
        let _ = done_tx.send(result);
    });
    match done_rx.await {
        // As the cookbook's: no result messages.
        Ok(Ok(())) => Ok(Response::new(Box::pin(tokio_stream::empty()))),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(Status::internal("the drop stopped unexpectedly")),
    }
}
