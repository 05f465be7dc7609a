//! What datasets there are: ListFlights, GetFlightInfo, GetSchema and
//! PollFlightInfo, all answered from Parquet footers (never a data scan).

use prost::bytes::Bytes;
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

use super::{blocking, descriptor_name, finish, path_descriptor, BoxStream, Hangar};
use crate::auth::Operation;
use crate::error::{Error, Result};
use crate::ipc;
use crate::json::Value;
use crate::log::Call;
use crate::proto::flight_descriptor::DescriptorType;
use crate::proto::{
    Criteria, FlightDescriptor, FlightEndpoint, FlightInfo, Location, PollInfo, SchemaResult,
    Ticket,
};
use crate::query::Query;
use crate::store::{DatasetInfo, Plan};

pub(super) async fn list_flights(
    service: &Hangar,
    request: Request<Criteria>,
) -> Result<Response<BoxStream<FlightInfo>>, Status> {
    let mut call = service.call("ListFlights", &request);
    let (_, _permit) = service
        .enter(&mut call, &request, Operation::ListFlights)
        .await?;
    let result = async {
        // The criteria expression, if any, is a dataset name prefix.
        let prefix = String::from_utf8(request.get_ref().expression.to_vec()).map_err(|_| {
            Error::InvalidArgument(
                "ListFlights criteria must be a UTF-8 dataset name prefix".into(),
            )
        })?;
        let store = service.store.clone();
        let log = service.log;
        let infos = blocking(move || {
            store.list(&prefix, |name, err| {
                log.event(&format!(
                    "skipping {} in listing: {err}",
                    crate::log::quote(name)
                ))
            })
        })
        .await?;
        let flights = infos.iter().map(flight_info).collect::<Result<Vec<_>>>()?;
        call.rows = flights.len() as u64;
        Ok(flights)
    }
    .await;
    let flights = finish(call, result)?;
    Ok(Response::new(Box::pin(tokio_stream::iter(
        flights.into_iter().map(Ok),
    ))))
}

pub(super) async fn get_flight_info(
    service: &Hangar,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let mut call = service.call("GetFlightInfo", &request);
    let (_, _permit) = service
        .enter(&mut call, &request, Operation::GetFlightInfo)
        .await?;
    let result = async { describe(service, &mut call, request.get_ref()).await }.await;
    finish(call, result).map(Response::new)
}

pub(super) async fn poll_flight_info(
    service: &Hangar,
    request: Request<FlightDescriptor>,
) -> Result<Response<PollInfo>, Status> {
    let mut call = service.call("PollFlightInfo", &request);
    let (_, _permit) = service
        .enter(&mut call, &request, Operation::PollFlightInfo)
        .await?;
    let result = async {
        let info = describe(service, &mut call, request.get_ref()).await?;
        // Datasets are complete when they exist: no retry descriptor, done.
        Ok(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        })
    }
    .await;
    finish(call, result).map(Response::new)
}

pub(super) async fn get_schema(
    service: &Hangar,
    request: Request<FlightDescriptor>,
) -> Result<Response<SchemaResult>, Status> {
    let mut call = service.call("GetSchema", &request);
    let (_, _permit) = service
        .enter(&mut call, &request, Operation::GetSchema)
        .await?;
    let result = async {
        // The answer's schema: the dataset's, or a query's projection.
        let info = describe(service, &mut call, request.get_ref()).await?;
        Ok(SchemaResult {
            schema: info.schema,
        })
    }
    .await;
    finish(call, result).map(Response::new)
}

/// A dataset as Flight describes it: one endpoint whose ticket is the name,
/// with no location (redeem it on this same server), as the cookbook does.
fn flight_info(info: &DatasetInfo) -> Result<FlightInfo> {
    Ok(FlightInfo {
        schema: ipc::schema_to_ipc(&info.schema)?,
        flight_descriptor: Some(path_descriptor(&info.name)),
        endpoint: vec![FlightEndpoint {
            ticket: Some(Ticket {
                ticket: Bytes::from(info.name.clone().into_bytes()),
            }),
            location: vec![],
            expiration_time: None,
            app_metadata: Bytes::new(),
        }],
        total_records: info.rows,
        total_bytes: i64::try_from(info.bytes).unwrap_or(i64::MAX),
        ordered: true,
        app_metadata: Bytes::new(),
    })
}

/// Describes what a descriptor names, on a worker thread: a dataset (PATH,
/// the cookbook's one endpoint) or a query (CMD, see [`crate::query`]).
async fn describe(
    service: &Hangar,
    call: &mut Call,
    descriptor: &FlightDescriptor,
) -> Result<FlightInfo> {
    let store = service.store.clone();
    if descriptor.r#type == DescriptorType::Cmd as i32 {
        let query = Query::from_command(&descriptor.cmd)?;
        call.dataset(&query.dataset);
        let plan = blocking(move || store.plan(&query)).await?;
        call.rows = plan.rows.unwrap_or(0);
        call.bytes = plan.bytes;
        return query_info(descriptor, &plan, service.nodes.as_deref());
    }
    let name = descriptor_name(descriptor)?;
    call.dataset(&name);
    let info = blocking(move || store.info(&name)).await?;
    call.rows = u64::try_from(info.rows).unwrap_or(0);
    call.bytes = info.bytes;
    flight_info(&info)
}

/// A query's FlightInfo: the projected schema, one endpoint per scan (its
/// ticket readable JSON), rows when exact (else -1, as Flight allows), the
/// estimated bytes read, and in `app_metadata` how many row groups the
/// statistics pruned. With peers, endpoint `i` names every node starting
/// with node `i mod N` (see [`crate::nodes`]).
fn query_info(
    descriptor: &FlightDescriptor,
    plan: &Plan,
    nodes: Option<&crate::nodes::Nodes>,
) -> Result<FlightInfo> {
    let nodes = nodes.map(crate::nodes::Nodes::snapshot);
    let endpoint = plan
        .scans
        .iter()
        .enumerate()
        .map(|(i, scan)| FlightEndpoint {
            ticket: Some(Ticket {
                ticket: Bytes::from(scan.to_ticket()),
            }),
            location: nodes
                .as_ref()
                .map(|n| n.locations(i))
                .unwrap_or_default()
                .into_iter()
                .map(|uri| Location { uri })
                .collect(),
            expiration_time: None,
            app_metadata: Bytes::new(),
        })
        .collect();
    let metadata = Value::object([
        ("row_groups", Value::from(plan.row_groups)),
        ("row_groups_kept", Value::from(plan.kept)),
        ("estimated_bytes", Value::from(plan.bytes)),
    ]);
    Ok(FlightInfo {
        schema: ipc::schema_to_ipc(&plan.schema)?,
        flight_descriptor: Some(descriptor.clone()),
        endpoint,
        total_records: plan.rows.and_then(|r| i64::try_from(r).ok()).unwrap_or(-1),
        total_bytes: i64::try_from(plan.bytes).unwrap_or(i64::MAX),
        ordered: true,
        app_metadata: Bytes::from(metadata.to_string()),
    })
}
