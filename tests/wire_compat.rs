//! hangar's generated protocol types and arrow-flight's agree on the wire.
//!
//! For every message in `proto/Flight.proto`: fill every field with a non-default
//! value, encode with hangar's type, decode with arrow-flight's and compare every
//! field; then the other way round. Equal bytes after a re-encode catch any field
//! the comparison might miss (an unknown field would be dropped by prost and
//! change the bytes).

use arrow_flight as af;
use hangar::proto as hp;
use prost::bytes::Bytes;
use prost::Message;

fn timestamp(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

/// Encodes `ours`, decodes it as `T`, checks the re-encoding gives the same
/// bytes, and returns the decoded value.
fn cross<A: Message, B: Message + Default>(ours: &A) -> B {
    let bytes = ours.encode_to_vec();
    assert!(
        !bytes.is_empty(),
        "every field set: the encoding is not empty"
    );
    let theirs = B::decode(bytes.as_slice()).expect("decodes as the other crate's type");
    assert_eq!(
        theirs.encode_to_vec(),
        bytes,
        "re-encoding with the other type gives the same bytes"
    );
    theirs
}

// ------------------------------------------------------------ field checks

fn same_descriptor(a: &hp::FlightDescriptor, b: &af::FlightDescriptor) {
    assert_eq!(a.r#type, b.r#type);
    assert_eq!(a.cmd, b.cmd);
    assert_eq!(a.path, b.path);
}

fn same_ticket(a: &hp::Ticket, b: &af::Ticket) {
    assert_eq!(a.ticket, b.ticket);
}

fn same_location(a: &hp::Location, b: &af::Location) {
    assert_eq!(a.uri, b.uri);
}

fn same_endpoint(a: &hp::FlightEndpoint, b: &af::FlightEndpoint) {
    match (&a.ticket, &b.ticket) {
        (Some(x), Some(y)) => same_ticket(x, y),
        (None, None) => {}
        other => panic!("ticket presence differs: {other:?}"),
    }
    assert_eq!(a.location.len(), b.location.len());
    for (x, y) in a.location.iter().zip(&b.location) {
        same_location(x, y);
    }
    assert_eq!(a.expiration_time, b.expiration_time);
    assert_eq!(a.app_metadata, b.app_metadata);
}

fn same_info(a: &hp::FlightInfo, b: &af::FlightInfo) {
    assert_eq!(a.schema, b.schema);
    match (&a.flight_descriptor, &b.flight_descriptor) {
        (Some(x), Some(y)) => same_descriptor(x, y),
        (None, None) => {}
        other => panic!("descriptor presence differs: {other:?}"),
    }
    assert_eq!(a.endpoint.len(), b.endpoint.len());
    for (x, y) in a.endpoint.iter().zip(&b.endpoint) {
        same_endpoint(x, y);
    }
    assert_eq!(a.total_records, b.total_records);
    assert_eq!(a.total_bytes, b.total_bytes);
    assert_eq!(a.ordered, b.ordered);
    assert_eq!(a.app_metadata, b.app_metadata);
}

// ------------------------------------------------------------ sample values

fn path_descriptor() -> hp::FlightDescriptor {
    hp::FlightDescriptor {
        r#type: hp::flight_descriptor::DescriptorType::Path as i32,
        cmd: Bytes::new(),
        path: vec!["datasets".into(), "données.parquet".into()],
    }
}

fn cmd_descriptor() -> hp::FlightDescriptor {
    hp::FlightDescriptor {
        r#type: hp::flight_descriptor::DescriptorType::Cmd as i32,
        cmd: Bytes::from_static(b"SELECT * FROM t\x00\xff"),
        path: vec![],
    }
}

/// A descriptor with every field set (not a meaningful one, but legal on the wire).
fn full_descriptor() -> hp::FlightDescriptor {
    hp::FlightDescriptor {
        r#type: hp::flight_descriptor::DescriptorType::Cmd as i32,
        cmd: Bytes::from_static(b"cmd"),
        path: vec!["p".into()],
    }
}

fn endpoint(n: u8) -> hp::FlightEndpoint {
    hp::FlightEndpoint {
        ticket: Some(hp::Ticket {
            ticket: Bytes::from(vec![n, 0, 255, n]),
        }),
        location: vec![
            hp::Location {
                uri: format!("grpc+tls://host-{n}:8815"),
            },
            hp::Location {
                uri: "arrow-flight-reuse-connection://?".into(),
            },
        ],
        expiration_time: Some(timestamp(1_764_079_200 + i64::from(n), 123_456_789)),
        app_metadata: Bytes::from(format!("endpoint {n} metadata")),
    }
}

fn flight_info() -> hp::FlightInfo {
    hp::FlightInfo {
        schema: Bytes::from_static(b"\xff\xff\xff\xff\x10\x00\x00\x00schema bytes"),
        flight_descriptor: Some(path_descriptor()),
        endpoint: vec![endpoint(1), endpoint(2)],
        total_records: 1_234_567_890_123,
        total_bytes: -1,
        ordered: true,
        app_metadata: Bytes::from_static(b"{\"k\":\"v\"}"),
    }
}

// ------------------------------------------------------------ messages

#[test]
fn handshake_request_and_response_match_arrow_flight() {
    let ours = hp::HandshakeRequest {
        protocol_version: u64::MAX,
        payload: Bytes::from_static(b"\x00token\xff"),
    };
    let theirs: af::HandshakeRequest = cross(&ours);
    assert_eq!(theirs.protocol_version, ours.protocol_version);
    assert_eq!(theirs.payload, ours.payload);
    let back: hp::HandshakeRequest = cross(&theirs);
    assert_eq!(back, ours);

    let ours = hp::HandshakeResponse {
        protocol_version: 7,
        payload: Bytes::from_static(b"bearer abc"),
    };
    let theirs: af::HandshakeResponse = cross(&ours);
    assert_eq!(theirs.protocol_version, 7);
    assert_eq!(theirs.payload, ours.payload);
    let back: hp::HandshakeResponse = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn basic_auth_matches_arrow_flight() {
    let ours = hp::BasicAuth {
        username: "alice".into(),
        password: "pässwörd 🔑".into(),
    };
    let theirs: af::BasicAuth = cross(&ours);
    assert_eq!(theirs.username, ours.username);
    assert_eq!(theirs.password, ours.password);
    let back: hp::BasicAuth = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn empty_matches_arrow_flight() {
    let ours = hp::Empty {};
    assert!(ours.encode_to_vec().is_empty());
    let theirs = af::Empty::decode(ours.encode_to_vec().as_slice()).unwrap();
    assert!(theirs.encode_to_vec().is_empty());
    let back = hp::Empty::decode(theirs.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn action_type_matches_arrow_flight() {
    let ours = hp::ActionType {
        r#type: "drop_dataset".into(),
        description: "Delete a dataset. Body: the dataset name, UTF-8.".into(),
    };
    let theirs: af::ActionType = cross(&ours);
    assert_eq!(theirs.r#type, ours.r#type);
    assert_eq!(theirs.description, ours.description);
    let back: hp::ActionType = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn criteria_matches_arrow_flight() {
    let ours = hp::Criteria {
        expression: Bytes::from_static(b"sales-\xff"),
    };
    let theirs: af::Criteria = cross(&ours);
    assert_eq!(theirs.expression, ours.expression);
    let back: hp::Criteria = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn action_matches_arrow_flight() {
    let ours = hp::Action {
        r#type: "drop_dataset".into(),
        body: Bytes::from_static(b"uploaded.parquet"),
    };
    let theirs: af::Action = cross(&ours);
    assert_eq!(theirs.r#type, ours.r#type);
    assert_eq!(theirs.body, ours.body);
    let back: hp::Action = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn result_matches_arrow_flight() {
    let ours = hp::Result {
        body: Bytes::from_static(b"{\"dropped\":\"d\"}"),
    };
    let theirs: af::Result = cross(&ours);
    assert_eq!(theirs.body, ours.body);
    let back: hp::Result = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn schema_result_matches_arrow_flight() {
    let ours = hp::SchemaResult {
        schema: Bytes::from_static(b"\xff\xff\xff\xffschema"),
    };
    let theirs: af::SchemaResult = cross(&ours);
    assert_eq!(theirs.schema, ours.schema);
    let back: hp::SchemaResult = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn flight_descriptor_path_and_cmd_match_arrow_flight() {
    for ours in [path_descriptor(), cmd_descriptor(), full_descriptor()] {
        let theirs: af::FlightDescriptor = cross(&ours);
        same_descriptor(&ours, &theirs);
        let back: hp::FlightDescriptor = cross(&theirs);
        assert_eq!(back, ours);
    }
    // The enum values agree by name and number.
    use af::flight_descriptor::DescriptorType as T;
    use hp::flight_descriptor::DescriptorType as O;
    for (o, t) in [
        (O::Unknown, T::Unknown),
        (O::Path, T::Path),
        (O::Cmd, T::Cmd),
    ] {
        assert_eq!(o as i32, t as i32);
        assert_eq!(o.as_str_name(), t.as_str_name());
    }
    let theirs: af::FlightDescriptor = cross(&path_descriptor());
    assert_eq!(theirs.r#type(), T::Path);
    let theirs: af::FlightDescriptor = cross(&cmd_descriptor());
    assert_eq!(theirs.r#type(), T::Cmd);
}

#[test]
fn flight_info_with_endpoints_ordered_and_app_metadata_matches_arrow_flight() {
    let ours = flight_info();
    let theirs: af::FlightInfo = cross(&ours);
    same_info(&ours, &theirs);
    assert!(theirs.ordered);
    assert_eq!(theirs.endpoint.len(), 2);
    let back: hp::FlightInfo = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn poll_info_with_progress_and_expiration_matches_arrow_flight() {
    let ours = hp::PollInfo {
        info: Some(flight_info()),
        flight_descriptor: Some(cmd_descriptor()),
        progress: Some(0.375),
        expiration_time: Some(timestamp(1_900_000_000, 5)),
    };
    let theirs: af::PollInfo = cross(&ours);
    same_info(ours.info.as_ref().unwrap(), theirs.info.as_ref().unwrap());
    same_descriptor(
        ours.flight_descriptor.as_ref().unwrap(),
        theirs.flight_descriptor.as_ref().unwrap(),
    );
    assert_eq!(theirs.progress, Some(0.375));
    assert_eq!(theirs.expiration_time, ours.expiration_time);
    let back: hp::PollInfo = cross(&theirs);
    assert_eq!(back, ours);

    // progress 0.0 is present (optional double), not the same as absent.
    let zero = hp::PollInfo {
        progress: Some(0.0),
        ..Default::default()
    };
    let theirs: af::PollInfo = cross(&zero);
    assert_eq!(theirs.progress, Some(0.0));
}

#[test]
fn flight_endpoint_with_expiration_and_app_metadata_matches_arrow_flight() {
    let ours = endpoint(9);
    let theirs: af::FlightEndpoint = cross(&ours);
    same_endpoint(&ours, &theirs);
    assert_eq!(
        theirs.expiration_time,
        Some(timestamp(1_764_079_209, 123_456_789))
    );
    let back: hp::FlightEndpoint = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn location_matches_arrow_flight() {
    let ours = hp::Location {
        uri: "grpc+tcp://127.0.0.1:8815".into(),
    };
    let theirs: af::Location = cross(&ours);
    same_location(&ours, &theirs);
    let back: hp::Location = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn ticket_matches_arrow_flight() {
    let ours = hp::Ticket {
        ticket: Bytes::from_static(b"uploaded.parquet\x00\xff"),
    };
    let theirs: af::Ticket = cross(&ours);
    same_ticket(&ours, &theirs);
    let back: hp::Ticket = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn flight_data_with_every_field_and_a_body_matches_arrow_flight() {
    // A body larger than one protobuf varint byte can describe, with every
    // byte value in it.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let ours = hp::FlightData {
        flight_descriptor: Some(path_descriptor()),
        data_header: Bytes::from_static(b"\x0c\x00\x00\x00header flatbuffer"),
        app_metadata: Bytes::from_static(b"app metadata"),
        data_body: Bytes::from(body),
    };
    let theirs: af::FlightData = cross(&ours);
    same_descriptor(
        ours.flight_descriptor.as_ref().unwrap(),
        theirs.flight_descriptor.as_ref().unwrap(),
    );
    assert_eq!(theirs.data_header, ours.data_header);
    assert_eq!(theirs.app_metadata, ours.app_metadata);
    assert_eq!(theirs.data_body, ours.data_body);
    let back: hp::FlightData = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn put_result_matches_arrow_flight() {
    let ours = hp::PutResult {
        app_metadata: Bytes::from_static(b"{\"rows\":3,\"bytes\":1024}"),
    };
    let theirs: af::PutResult = cross(&ours);
    assert_eq!(theirs.app_metadata, ours.app_metadata);
    let back: hp::PutResult = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn cancel_flight_info_request_and_result_match_arrow_flight() {
    let ours = hp::CancelFlightInfoRequest {
        info: Some(flight_info()),
    };
    let theirs: af::CancelFlightInfoRequest = cross(&ours);
    same_info(ours.info.as_ref().unwrap(), theirs.info.as_ref().unwrap());
    let back: hp::CancelFlightInfoRequest = cross(&theirs);
    assert_eq!(back, ours);

    use af::CancelStatus as T;
    use hp::CancelStatus as O;
    for (o, t) in [
        (O::Unspecified, T::Unspecified),
        (O::Cancelled, T::Cancelled),
        (O::Cancelling, T::Cancelling),
        (O::NotCancellable, T::NotCancellable),
    ] {
        assert_eq!(o as i32, t as i32);
        assert_eq!(o.as_str_name(), t.as_str_name());
        if o == O::Unspecified {
            continue; // the default value: nothing on the wire
        }
        let ours = hp::CancelFlightInfoResult { status: o as i32 };
        let theirs: af::CancelFlightInfoResult = cross(&ours);
        assert_eq!(theirs.status(), t);
        let back: hp::CancelFlightInfoResult = cross(&theirs);
        assert_eq!(back.status(), o);
    }
}

#[test]
fn renew_flight_endpoint_request_matches_arrow_flight() {
    let ours = hp::RenewFlightEndpointRequest {
        endpoint: Some(endpoint(3)),
    };
    let theirs: af::RenewFlightEndpointRequest = cross(&ours);
    same_endpoint(
        ours.endpoint.as_ref().unwrap(),
        theirs.endpoint.as_ref().unwrap(),
    );
    let back: hp::RenewFlightEndpointRequest = cross(&theirs);
    assert_eq!(back, ours);
}

#[test]
fn arrow_flight_values_decode_into_hangar_types() {
    // Built with arrow-flight's own constructors, read by hangar's types.
    let descriptor = af::FlightDescriptor::new_path(vec!["uploaded.parquet".into()]);
    let ours: hp::FlightDescriptor = cross(&descriptor);
    assert_eq!(
        ours.r#type,
        hp::flight_descriptor::DescriptorType::Path as i32
    );
    assert_eq!(ours.path, ["uploaded.parquet"]);

    let info = af::FlightInfo::new()
        .with_descriptor(descriptor.clone())
        .with_endpoint(
            af::FlightEndpoint::new()
                .with_ticket(af::Ticket::new("uploaded.parquet"))
                .with_location("grpc://127.0.0.1:8815")
                .with_app_metadata(vec![1, 2, 3]),
        )
        .with_total_records(42)
        .with_total_bytes(4096)
        .with_ordered(true)
        .with_app_metadata(vec![9]);
    let ours: hp::FlightInfo = cross(&info);
    assert_eq!(ours.total_records, 42);
    assert_eq!(ours.total_bytes, 4096);
    assert!(ours.ordered);
    assert_eq!(ours.app_metadata.as_ref(), [9]);
    let endpoint = &ours.endpoint[0];
    assert_eq!(
        endpoint.ticket.as_ref().unwrap().ticket.as_ref(),
        b"uploaded.parquet"
    );
    assert_eq!(endpoint.location[0].uri, "grpc://127.0.0.1:8815");
    assert_eq!(endpoint.app_metadata.as_ref(), [1, 2, 3]);
}

#[test]
fn proto_declares_every_flight_service_method() {
    let proto = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/Flight.proto"))
        .expect("reading proto/Flight.proto");
    assert!(
        proto.contains("package arrow.flight.protocol;"),
        "the upstream package name"
    );
    assert!(proto.contains("service FlightService {"));
    let declared: Vec<&str> = proto
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
        .filter_map(|line| line.strip_prefix("rpc "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect();
    for (method, signature) in [
        (
            "Handshake",
            "rpc Handshake(stream HandshakeRequest) returns (stream HandshakeResponse)",
        ),
        (
            "ListFlights",
            "rpc ListFlights(Criteria) returns (stream FlightInfo)",
        ),
        (
            "GetFlightInfo",
            "rpc GetFlightInfo(FlightDescriptor) returns (FlightInfo)",
        ),
        (
            "PollFlightInfo",
            "rpc PollFlightInfo(FlightDescriptor) returns (PollInfo)",
        ),
        (
            "GetSchema",
            "rpc GetSchema(FlightDescriptor) returns (SchemaResult)",
        ),
        ("DoGet", "rpc DoGet(Ticket) returns (stream FlightData)"),
        (
            "DoPut",
            "rpc DoPut(stream FlightData) returns (stream PutResult)",
        ),
        (
            "DoExchange",
            "rpc DoExchange(stream FlightData) returns (stream FlightData)",
        ),
        ("DoAction", "rpc DoAction(Action) returns (stream Result)"),
        (
            "ListActions",
            "rpc ListActions(Empty) returns (stream ActionType)",
        ),
    ] {
        assert!(
            declared.contains(&method),
            "rpc {method} missing; declared: {declared:?}"
        );
        assert!(
            proto.contains(signature),
            "rpc {method} has the upstream signature `{signature}`"
        );
    }
    assert_eq!(declared.len(), 10, "exactly the ten methods: {declared:?}");
}

#[test]
fn service_paths_match_arrow_flight() {
    // gRPC routes calls by "/package.Service/Method": both generated services
    // must use the same name.
    assert_eq!(
        <hp::FlightServiceServer<DummyService> as tonic::server::NamedService>::NAME,
        "arrow.flight.protocol.FlightService"
    );
    assert_eq!(
        <af::flight_service_server::FlightServiceServer<DummyService> as tonic::server::NamedService>::NAME,
        <hp::FlightServiceServer<DummyService> as tonic::server::NamedService>::NAME,
    );
}

/// Only used for its type: `NamedService::NAME` does not depend on it, but the
/// server types need some service parameter.
struct DummyService;
