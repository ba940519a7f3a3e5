//! The mesh between two cores on real glommio executors joined by a real channel mesh, with a
//! host as small as the mesh allows (the node's `Core` is the other host, tested by the
//! server's end-to-end tests).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use runnel_segment::runtime::channel::{Mesh as Channels, MeshSenders};
use runnel_segment::runtime::{first_of, sleep, spawn, First, TaskHandle};

use super::codec::{put_string, put_u64, Reader};
use super::{
    AnyValue, Envelope, Mesh, MeshError, MeshHost, RemoteService, Service, ServiceId, WireError,
};

/// One core of the test: its mesh side and its senders.
struct TestCore {
    index: u32,
    mesh: Mesh<TestCore>,
    senders: MeshSenders<Envelope>,
    closing: Cell<bool>,
}

impl MeshHost for TestCore {
    fn mesh(&self) -> &Mesh<TestCore> {
        &self.mesh
    }

    async fn send_envelope(&self, to: u32, envelope: Envelope) {
        // The other core's executor may have ended (the test is over): the envelope is dropped.
        let _ = self.senders.send_to(to as usize, envelope).await;
    }

    fn mesh_closing(&self) -> bool {
        self.closing.get()
    }
}

/// Declares a test service.
macro_rules! service {
    ($(#[$doc:meta])* $name:ident, $id:literal, $request:ty, $response:ty) => {
        $(#[$doc])*
        struct $name;

        impl Service for $name {
            const NAME: &'static str = $id;
            type Request = $request;
            type Response = $response;
        }
    };
}

service!(
    /// Says which core answered, after awaiting a timer (a handler may await).
    Echo, "test.echo", String, String
);
service!(
    /// Never answers.
    Silent, "test.silent", (), ()
);
service!(
    /// Registered nowhere.
    Unregistered, "test.unregistered", (), ()
);
service!(
    /// `Echo`'s id with another request type (as two services sharing an id would be).
    WrongRequest, "test.echo", u64, String
);
service!(
    /// `Echo`'s id with another response type.
    WrongResponse, "test.echo", String, u64
);

/// Joins core `index` of `builder`, registers the test services, and serves calls from the
/// other core (until its senders go: the returned task then ends).
async fn start(index: u32, builder: Channels<Envelope>) -> (Rc<TestCore>, Vec<TaskHandle<()>>) {
    let (senders, receivers) = builder.join().await.expect("join the mesh");
    let core = Rc::new(TestCore {
        index,
        mesh: Mesh::new(index, 2),
        senders,
        closing: Cell::new(false),
    });
    core.mesh
        .register::<Echo, _, _>(|core: Rc<TestCore>, text| async move {
            sleep(Duration::from_millis(1)).await;
            Ok(format!("{text} from core {}", core.index))
        });
    core.mesh
        .register::<Silent, _, _>(|_, ()| std::future::pending());
    let serving = receivers
        .into_iter()
        .map(|receiver| {
            let core = Rc::clone(&core);
            spawn(async move {
                while let Some(envelope) = receiver.recv().await {
                    Mesh::receive(&core, envelope);
                }
            })
        })
        .collect();
    (core, serving)
}

/// Core 1 serves until core 0 ends (its envelopes stop when core 0's senders go).
fn serve_core_one(builder: Channels<Envelope>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        runnel_segment::runtime::run("mesh-test-1", 2, move || async move {
            let (_core, serving) = start(1, builder).await;
            for task in serving {
                task.join().await;
            }
        })
    })
}

/// A call to the other core runs its handler there and returns its typed response; a call to
/// this core runs in place; a missing handler, a missing core and mismatched types are
/// answered as errors, never a panic.
#[test]
fn calls_cross_cores_typed_and_errors_are_answers() {
    let builder = Channels::full(2, 16);
    let one = serve_core_one(builder.clone());
    runnel_segment::runtime::run("mesh-test-0", 2, move || async move {
        let (core, _serving) = start(0, builder).await;
        let there = Mesh::call::<Echo>(&core, 1, "hello".into()).await;
        assert_eq!(there, Ok("hello from core 1".to_string()));
        let here = Mesh::call::<Echo>(&core, 0, "hi".into()).await;
        assert_eq!(here, Ok("hi from core 0".to_string()));
        assert_eq!(
            Mesh::call::<Unregistered>(&core, 1, ()).await,
            Err(MeshError::NoHandler {
                service: Unregistered::ID,
                core: 1
            })
        );
        assert_eq!(
            Mesh::call::<Echo>(&core, 2, String::new()).await,
            Err(MeshError::NoCore { core: 2, cores: 2 })
        );
        let wrong_request = Mesh::call::<WrongRequest>(&core, 1, 7).await;
        assert!(
            matches!(wrong_request, Err(MeshError::Internal { .. })),
            "{wrong_request:?}"
        );
        let wrong_response = Mesh::call::<WrongResponse>(&core, 1, "x".into()).await;
        assert!(
            matches!(wrong_response, Err(MeshError::Internal { .. })),
            "{wrong_response:?}"
        );
        assert!(core.mesh.pending.is_empty(), "every answered call left");
        core.closing.set(true);
    });
    one.join().expect("core 1");
}

/// A call whose core closes before the answer ends with `Stopping` and leaves no slot; one
/// whose caller gives up leaves none either.
#[test]
fn a_closing_core_ends_its_calls() {
    let builder = Channels::full(2, 16);
    let one = serve_core_one(builder.clone());
    runnel_segment::runtime::run("mesh-test-0", 2, move || async move {
        let (core, _serving) = start(0, builder).await;
        let given_up = first_of(
            Mesh::call::<Silent>(&core, 1, ()),
            sleep(Duration::from_millis(10)),
            std::future::pending::<()>(),
        )
        .await;
        assert!(matches!(given_up, First::B(())), "core 1 never answers");
        assert!(core.mesh.pending.is_empty(), "the given-up call left");
        let calling = {
            let core = Rc::clone(&core);
            spawn(async move { Mesh::call::<Silent>(&core, 1, ()).await })
        };
        // Lets the call reach core 1 (either way, it ends the same).
        sleep(Duration::from_millis(1)).await;
        core.closing.set(true);
        core.mesh.wake_all();
        assert_eq!(calling.join().await, Err(MeshError::Stopping));
        assert!(core.mesh.pending.is_empty(), "the ended call left");
    });
    one.join().expect("core 1");
}

/// A host without a channel, for tests of the registry alone.
struct Bare {
    mesh: Mesh<Bare>,
}

impl MeshHost for Bare {
    fn mesh(&self) -> &Mesh<Bare> {
        &self.mesh
    }

    async fn send_envelope(&self, _: u32, _: Envelope) {}

    fn mesh_closing(&self) -> bool {
        true
    }
}

/// Two services with one id are a bug found when the second registers.
#[test]
#[should_panic(expected = "both have id")]
fn a_second_service_with_one_id_is_refused() {
    let core = Bare {
        mesh: Mesh::new(0, 1),
    };
    core.mesh
        .register::<Echo, _, _>(|_, text| async move { Ok(text) });
    assert!(core.mesh.handles(Echo::ID));
    core.mesh
        .register::<WrongResponse, _, _>(|_, _| async move { Ok(1) });
}

service!(
    /// A remote service: a string in, its length out.
    Length, "test.length", String, u64
);

impl RemoteService for Length {
    fn encode_request(request: &String, out: &mut Vec<u8>) {
        put_string(out, request);
    }

    fn decode_request(bytes: &[u8]) -> Result<String, WireError> {
        let mut reader = Reader::new(bytes);
        let text = reader.string("text")?;
        reader.finish()?;
        Ok(text)
    }

    fn encode_response(response: &u64, out: &mut Vec<u8>) {
        put_u64(out, *response);
    }

    fn decode_response(bytes: &[u8]) -> Result<u64, WireError> {
        let mut reader = Reader::new(bytes);
        let length = reader.u64("length")?;
        reader.finish()?;
        Ok(length)
    }
}

/// The codecs a core keeps for calls from other nodes: a remote service's request decodes
/// and its response encodes; a local-only or unknown service, bytes that do not decode and a
/// response of another type are errors, never panics.
#[test]
fn remote_codecs_decode_requests_and_encode_responses() -> Result<(), MeshError> {
    let core = Bare {
        mesh: Mesh::new(0, 1),
    };
    core.mesh
        .register_remote::<Length, _, _>(|_, text| async move { Ok(text.len() as u64) });
    core.mesh
        .register::<Echo, _, _>(|_, text| async move { Ok(text) });
    let mut request = Vec::new();
    Length::encode_request(&"four".to_string(), &mut request);
    let decoded = core
        .mesh
        .decode_remote(Length::ID, &request)
        .ok_or(MeshError::Stopping)??;
    assert_eq!(
        decoded.downcast_ref::<String>().map(String::as_str),
        Some("four")
    );
    assert!(
        core.mesh.decode_remote(Echo::ID, &request).is_none(),
        "local only"
    );
    assert!(core
        .mesh
        .decode_remote(Unregistered::ID, &request)
        .is_none());
    let malformed = core.mesh.decode_remote(Length::ID, &request[..3]);
    assert!(
        matches!(
            malformed,
            Some(Err(MeshError::Malformed {
                service: "test.length",
                ..
            }))
        ),
        "{malformed:?}"
    );
    let response: AnyValue = Box::new(4_u64);
    let bytes = core.mesh.encode_remote(Length::ID, &response)?;
    assert_eq!(Length::decode_response(&bytes), Ok(4));
    let wrong: AnyValue = Box::new("four".to_string());
    assert!(matches!(
        core.mesh.encode_remote(Length::ID, &wrong),
        Err(MeshError::Internal { .. })
    ));
    Ok(())
}

/// Ids are the FNV-1a hash of the name, as `docs/format/peer.md` lists them.
#[test]
fn service_ids_hash_their_names() {
    assert_eq!(ServiceId::of(""), ServiceId(0x811c_9dc5));
    assert_eq!(ServiceId::of("a"), ServiceId(0xe40c_292c));
    assert_eq!(ServiceId::of("mesh.forward"), ServiceId(0xda7d_2c7b));
    assert_eq!(Echo::ID, ServiceId::of("test.echo"));
}
