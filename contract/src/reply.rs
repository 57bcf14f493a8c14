//! What the broker answered when it refused something: the AMQP reply code of a channel or
//! connection error. A module of its own because both the publishing side ([`crate::amqp`])
//! and the declaring side ([`crate::topology`]) read it.

/// The AMQP reply code of a channel or connection error the broker sent (`403` access
/// refused, `404` not found, ...); `None` for other errors.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}
