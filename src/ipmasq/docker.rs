//! Where our jumps stand among Docker's rules. Docker 28 and later drop traffic from other
//! interfaces addressed straight to a container: in filter FORWARD (its DOCKER-FORWARD chain,
//! jumped to from the top) and in raw PREROUTING (one appended DROP per container), in ip6tables
//! as in iptables when it runs with `--ipv6`. So the overlay's accepts are also jumped to from
//! DOCKER-USER, which Docker jumps to first and leaves to other programs, and from the top of
//! raw PREROUTING; and a jump that Docker's rules came to precede is moved above them.

use super::{failed, IpTablesError};

/// Makes `jump` a rule of `hook` that none of Docker's rules precedes. Missing, it is inserted
/// first, as flanneld does (`-I`). Behind a rule of Docker's, it is moved to just before the
/// first one. Behind anything else it stays: an operator's rule above it (a DROP in DOCKER-USER,
/// a RETURN in POSTROUTING) is theirs to keep in force. Creates `hook` if it is absent (`rules`
/// is `None`). Returns whether anything changed.
///
/// # Errors
/// The first `iptables` (or `ip6tables`) run that fails.
pub(super) fn ensure_jump(
    ipt: &iptables::IPTables,
    table: &str,
    hook: &str,
    jump: &str,
    rules: Option<&[String]>,
) -> Result<bool, IpTablesError> {
    let Some(rules) = rules else {
        ipt.new_chain(table, hook).map_err(failed(ipt, format!("create chain {hook}")))?;
        ipt.insert(table, hook, jump, 1).map_err(failed(ipt, format!("insert jump into {hook}")))?;
        return Ok(true);
    };
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let position = match jump_placement(&rules, jump) {
        JumpPlacement::InPlace => return Ok(false),
        JumpPlacement::Preempted { docker_rule } => {
            ipt.delete(table, hook, jump).map_err(failed(ipt, format!("move jump in {hook}")))?;
            docker_rule + 1
        }
        // iptables may print a rule differently from how we wrote it; then `-C` decides.
        JumpPlacement::Unlisted if ipt.exists(table, hook, jump).map_err(failed(ipt, "check jump"))? => return Ok(false),
        JumpPlacement::Unlisted => 1,
    };
    ipt.insert(table, hook, jump, position as i32).map_err(failed(ipt, format!("insert jump into {hook}")))?;
    Ok(true)
}

/// Where our jump stands among a chain's rules (as `-S` prints them, without `-A <chain> `).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum JumpPlacement {
    /// Present, and none of Docker's rules comes before it.
    InPlace,
    /// Present, but after one of Docker's rules (index `docker_rule`, from 0), which may drop
    /// overlay traffic before it is reached.
    Preempted { docker_rule: usize },
    /// Not in the listing.
    Unlisted,
}

pub(super) fn jump_placement(rules: &[&str], jump: &str) -> JumpPlacement {
    let Some(at) = rules.iter().position(|rule| *rule == jump) else {
        return JumpPlacement::Unlisted;
    };
    match rules[..at].iter().position(|rule| dockers_rule(rule)) {
        Some(docker_rule) => JumpPlacement::Preempted { docker_rule },
        None => JumpPlacement::InPlace,
    }
}

/// Whether a rule is one of those dockerd puts ahead of ours: a jump to one of its chains other
/// than DOCKER-USER (`-j DOCKER-FORWARD`, `-o docker0 -j DOCKER`, `-j DOCKER-ISOLATION-STAGE-1`),
/// or a bare `-j RETURN` / `-j DROP` / `-j REJECT` that ends the chain for everything (Docker
/// appends `-j RETURN` to DOCKER-USER). A rule with conditions of its own is an operator's.
fn dockers_rule(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let target = words.iter().position(|w| *w == "-j").and_then(|i| words.get(i + 1)).copied().unwrap_or_default();
    let docker_chain = target.starts_with("DOCKER") && target != "DOCKER-USER";
    let bare_end = words.len() == 2 && ["RETURN", "DROP", "REJECT"].contains(&target);
    docker_chain || bare_end
}
