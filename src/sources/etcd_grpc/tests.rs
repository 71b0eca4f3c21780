use super::*;

#[test]
fn a_healthy_follower_is_chosen_over_the_leader() {
    let a = |member_id, leader, errors| Answered {
        member_id,
        leader,
        errors,
    };
    // Leader first in the list: the follower after it is taken.
    assert_eq!(choose(&[a(1, 1, false), a(2, 1, false)]), Some(1));
    // Only the leader answered.
    assert_eq!(choose(&[a(1, 1, false)]), Some(0));
    // A follower with an alarm, or one that knows no leader, is not healthy.
    assert_eq!(
        choose(&[a(2, 1, true), a(3, 0, false), a(1, 1, false)]),
        Some(2)
    );
    assert_eq!(choose(&[a(3, 0, false)]), None);
    assert_eq!(choose(&[]), None);
}

#[test]
fn the_member_name_is_found_by_its_id() {
    let m = |name: &str, id: &str| EtcdMember {
        name: name.into(),
        id: id.into(),
        ..EtcdMember::default()
    };
    let members = [m("a", "1f"), m("", "2a")];
    assert_eq!(
        member_name(Some(&members), Some("1f")).as_deref(),
        Some("a")
    );
    assert_eq!(member_name(Some(&members), Some("2a")), None);
    assert_eq!(member_name(Some(&members), Some("3")), None);
    assert_eq!(member_name(None, Some("1f")), None);
}

#[test]
fn the_tls_cause_is_found_in_the_debug_form() {
    let debug = r#"TransportError(tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: DnsName("a"), presented: ["DnsName(\"b\")"] }) })))"#;
    assert_eq!(
        tls_cause(debug).as_deref(),
        Some(
            r#"InvalidCertificate(NotValidForNameContext { expected: DnsName("a"), presented: ["DnsName(\"b\")"] })"#
        )
    );
    assert_eq!(
        tls_cause("Custom { error: AlertReceived(BadCertificate) }").as_deref(),
        Some("AlertReceived(BadCertificate)")
    );
    assert_eq!(tls_cause("TransportError(Transport)"), None);
}
