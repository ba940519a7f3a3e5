//! The subscription feature's services on the core mesh (`crate::mesh`): what a coordinator,
//! an admin request or a create asks the cores that own a subscription's shards or coordinate
//! its group, on this node or another (every one is a [`RemoteService`]; encodings in
//! `docs/format/peer.md`, "Calls between nodes").

use std::rc::Rc;

use runnel_core::{Offset, ShardId};
use runnel_replicate::consumer::{MemberId, MemberInfo};
use runnel_replicate::metadata::SubscriptionId;

use super::{progress, slot};
use crate::core::Core;
use crate::mesh::codec::{put_count, put_option, put_string, put_u32, put_u64, Reader};
use crate::mesh::{MeshError, RemoteService, Service, WireError};

/// `subscription.assign`, to a shard's owner: hand the shard of a subscription to a member (or
/// to nobody).
pub struct Assign;

/// The request of [`Assign`]: as decided by the coordinator's group created at `epoch`, at its
/// `generation`. An older `(epoch, generation)` than the last applied is ignored: assignments
/// sent concurrently may arrive out of order, and a group created later (the coordinator
/// restarted, or moved to another node) supersedes an older one whose generations may be
/// higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The shard, owned by the called core.
    pub shard: ShardId,
    /// Its member now.
    pub member: Option<MemberId>,
    /// When the coordinator created its group, in ms since the Unix epoch.
    pub epoch: u64,
    /// The group generation of the decision.
    pub generation: u64,
}

/// `subscription.prepare`, to a shard owner: resolve where delivery starts on the called
/// core's shards of a subscription just created and persist it, before the create is answered.
pub struct Prepare;

/// `subscription.progress`, to a shard owner: the progress of the called core's shards of a
/// subscription.
pub struct Progress;

/// `subscription.members`, to the coordinator: the members of a subscription's group.
pub struct Members;

/// The progress of one (subscription, shard) on the core owning the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardProgress {
    /// The shard.
    pub shard: ShardId,
    /// Its committed offset, if delivery has a start yet.
    pub committed: Option<Offset>,
    /// Its readable end.
    pub end: Offset,
    /// Records delivered and not acked.
    pub unacked: u32,
}

impl Service for Assign {
    const NAME: &'static str = "subscription.assign";
    type Request = Assignment;
    type Response = ();
}

impl Service for Prepare {
    const NAME: &'static str = "subscription.prepare";
    type Request = SubscriptionId;
    type Response = ();
}

impl Service for Progress {
    const NAME: &'static str = "subscription.progress";
    type Request = SubscriptionId;
    type Response = Vec<ShardProgress>;
}

impl Service for Members {
    const NAME: &'static str = "subscription.members";
    type Request = SubscriptionId;
    type Response = Vec<MemberInfo>;
}

/// Registers the subscription services on `core`.
pub fn register(core: &Core) {
    core.mesh
        .register_remote::<Assign, _, _>(|core, assignment| async move {
            assign(&core, assignment).await
        });
    core.mesh
        .register_remote::<Prepare, _, _>(|core, subscription| async move {
            progress::prepare(&core, subscription).await
        });
    core.mesh
        .register_remote::<Progress, _, _>(|core, subscription| async move {
            progress::local_progress(&core, subscription).await
        });
    core.mesh
        .register_remote::<Members, _, _>(|core, subscription| async move {
            let group = core
                .subscriptions
                .groups
                .borrow()
                .get(&subscription)
                .cloned();
            Ok(group.map(|group| group.members()).unwrap_or_default())
        });
}

async fn assign(core: &Rc<Core>, assignment: Assignment) -> Result<(), MeshError> {
    let Assignment {
        subscription,
        shard,
        member,
        epoch,
        generation,
    } = assignment;
    let slot = slot::get_or_create(core, subscription, shard)
        .await
        .map_err(|error| MeshError::failed(error.message))?;
    slot.assign(member, epoch, generation);
    Ok(())
}

/// Bytes of one encoded [`ShardProgress`]: shard, committed option, end, unacked.
const SHARD_PROGRESS_BYTES: usize = 8 + 9 + 8 + 4;
/// The fewest bytes of one encoded [`MemberInfo`] (empty name, no shards).
const MEMBER_BYTES_MIN: usize = 8 + 4 + 4 + 8 + 8 + 8;

fn encode_subscription(subscription: &SubscriptionId, out: &mut Vec<u8>) {
    put_u64(out, subscription.0);
}

fn decode_subscription(bytes: &[u8]) -> Result<SubscriptionId, WireError> {
    let mut reader = Reader::new(bytes);
    let subscription = SubscriptionId(reader.u64("subscription")?);
    reader.finish()?;
    Ok(subscription)
}

/// `()`: no bytes.
fn encode_done(_: &(), _: &mut Vec<u8>) {}

fn decode_done(bytes: &[u8]) -> Result<(), WireError> {
    Reader::new(bytes).finish()
}

impl RemoteService for Assign {
    fn encode_request(request: &Assignment, out: &mut Vec<u8>) {
        put_u64(out, request.subscription.0);
        put_u64(out, request.shard.0);
        put_option(out, request.member.map(|member| member.0));
        put_u64(out, request.epoch);
        put_u64(out, request.generation);
    }

    fn decode_request(bytes: &[u8]) -> Result<Assignment, WireError> {
        let mut reader = Reader::new(bytes);
        let assignment = Assignment {
            subscription: SubscriptionId(reader.u64("subscription")?),
            shard: ShardId(reader.u64("shard")?),
            member: reader.option("member")?.map(MemberId),
            epoch: reader.u64("epoch")?,
            generation: reader.u64("generation")?,
        };
        reader.finish()?;
        Ok(assignment)
    }

    fn encode_response(response: &(), out: &mut Vec<u8>) {
        encode_done(response, out);
    }

    fn decode_response(bytes: &[u8]) -> Result<(), WireError> {
        decode_done(bytes)
    }
}

impl RemoteService for Prepare {
    fn encode_request(request: &SubscriptionId, out: &mut Vec<u8>) {
        encode_subscription(request, out);
    }

    fn decode_request(bytes: &[u8]) -> Result<SubscriptionId, WireError> {
        decode_subscription(bytes)
    }

    fn encode_response(response: &(), out: &mut Vec<u8>) {
        encode_done(response, out);
    }

    fn decode_response(bytes: &[u8]) -> Result<(), WireError> {
        decode_done(bytes)
    }
}

impl RemoteService for Progress {
    fn encode_request(request: &SubscriptionId, out: &mut Vec<u8>) {
        encode_subscription(request, out);
    }

    fn decode_request(bytes: &[u8]) -> Result<SubscriptionId, WireError> {
        decode_subscription(bytes)
    }

    fn encode_response(response: &Vec<ShardProgress>, out: &mut Vec<u8>) {
        put_count(out, response.len());
        for shard in response {
            put_u64(out, shard.shard.0);
            put_option(out, shard.committed.map(|offset| offset.0));
            put_u64(out, shard.end.0);
            put_u32(out, shard.unacked);
        }
    }

    fn decode_response(bytes: &[u8]) -> Result<Vec<ShardProgress>, WireError> {
        let mut reader = Reader::new(bytes);
        let count = reader.count("progress", SHARD_PROGRESS_BYTES)?;
        let mut shards = Vec::with_capacity(count);
        for _ in 0..count {
            shards.push(ShardProgress {
                shard: ShardId(reader.u64("shard")?),
                committed: reader.option("committed")?.map(Offset),
                end: Offset(reader.u64("end")?),
                unacked: reader.u32("unacked")?,
            });
        }
        reader.finish()?;
        Ok(shards)
    }
}

impl RemoteService for Members {
    fn encode_request(request: &SubscriptionId, out: &mut Vec<u8>) {
        encode_subscription(request, out);
    }

    fn decode_request(bytes: &[u8]) -> Result<SubscriptionId, WireError> {
        decode_subscription(bytes)
    }

    fn encode_response(response: &Vec<MemberInfo>, out: &mut Vec<u8>) {
        put_count(out, response.len());
        for member in response {
            put_u64(out, member.id.0);
            put_string(out, &member.name);
            put_count(out, member.shards.len());
            for shard in &member.shards {
                put_u64(out, shard.0);
            }
            put_u64(out, member.session_timeout_ms);
            put_u64(out, member.joined_ms);
            put_u64(out, member.last_seen_ms);
        }
    }

    fn decode_response(bytes: &[u8]) -> Result<Vec<MemberInfo>, WireError> {
        let mut reader = Reader::new(bytes);
        let count = reader.count("members", MEMBER_BYTES_MIN)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(MemberInfo {
                id: MemberId(reader.u64("member")?),
                name: reader.string("name")?,
                shards: reader.u64_list("member shards", ShardId)?,
                session_timeout_ms: reader.u64("session_timeout_ms")?,
                joined_ms: reader.u64("joined_ms")?,
                last_seen_ms: reader.u64("last_seen_ms")?,
            });
        }
        reader.finish()?;
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::codec::check_encoding;
    use crate::mesh::ServiceId;

    /// Every request and response of the subscription services round-trips; every truncation
    /// and every trailing byte is an error.
    #[test]
    fn every_request_and_response_round_trips() {
        let assignments = [
            Assignment {
                subscription: SubscriptionId(7),
                shard: ShardId(12),
                member: Some(MemberId(1_700_000_000_001)),
                epoch: 1_700_000_000_000,
                generation: 3,
            },
            Assignment {
                subscription: SubscriptionId(7),
                shard: ShardId(12),
                member: None,
                epoch: 1_700_000_000_000,
                generation: 4,
            },
        ];
        check_encoding(&assignments, Assign::encode_request, Assign::decode_request);
        let subscriptions = [SubscriptionId(1), SubscriptionId(u64::MAX)];
        check_encoding(
            &subscriptions,
            Prepare::encode_request,
            Prepare::decode_request,
        );
        check_encoding(
            &subscriptions,
            Progress::encode_request,
            Progress::decode_request,
        );
        check_encoding(
            &subscriptions,
            Members::encode_request,
            Members::decode_request,
        );
        assert_eq!(decode_done(&[]), Ok(()));
        assert_eq!(
            decode_done(&[0]),
            Err(WireError::TrailingBytes { bytes: 1 })
        );
        let progress = [
            vec![
                ShardProgress {
                    shard: ShardId(3),
                    committed: Some(Offset(10)),
                    end: Offset(20),
                    unacked: 4,
                },
                ShardProgress {
                    shard: ShardId(4),
                    committed: None,
                    end: Offset(0),
                    unacked: 0,
                },
            ],
            Vec::new(),
        ];
        check_encoding(
            &progress,
            Progress::encode_response,
            Progress::decode_response,
        );
        let members = [
            vec![MemberInfo {
                id: MemberId(9),
                name: "consumer-é".into(),
                shards: vec![ShardId(1), ShardId(2)],
                session_timeout_ms: 10_000,
                joined_ms: 1_700_000_000_000,
                last_seen_ms: 1_700_000_000_500,
            }],
            Vec::new(),
        ];
        check_encoding(&members, Members::encode_response, Members::decode_response);
    }

    /// The bytes of an `Assign` request as `docs/format/peer.md` draws them, and the service
    /// ids the document lists.
    #[test]
    fn assign_bytes_match_the_format_document() {
        let mut bytes = Vec::new();
        Assign::encode_request(
            &Assignment {
                subscription: SubscriptionId(7),
                shard: ShardId(12),
                member: Some(MemberId(5)),
                epoch: 9,
                generation: 3,
            },
            &mut bytes,
        );
        let expected: Vec<u8> = [
            &7u64.to_le_bytes()[..],
            &12u64.to_le_bytes(),
            &[1],
            &5u64.to_le_bytes(),
            &9u64.to_le_bytes(),
            &3u64.to_le_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(Assign::ID, ServiceId(0x07e9_3537));
    }

    /// A member list whose count claims more members than its bytes could hold is refused
    /// before anything is allocated.
    #[test]
    fn a_forged_member_count_is_refused() {
        let forged = u32::MAX.to_le_bytes();
        assert_eq!(
            Members::decode_response(&forged),
            Err(WireError::CountTooLarge {
                field: "members",
                count: u64::from(u32::MAX),
                bytes_left: 0
            })
        );
    }
}
