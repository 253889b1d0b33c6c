//! `teardown_machine`: removes one machine of a deployment that is tearing down.
//! `teardown` makes one per machine that is not gone yet, each carrying the provider
//! account's concurrency key, so a fleet's removals run as many at once as the account
//! allows and no more (one job removing them one after another held one slot for the
//! whole fleet), and each retries on its own.
//!
//! The machine is removed from its recorded store entry (`rm -y`, in a scratch store
//! made from the database, so any worker can do it) and recorded `removed` at once. A
//! broken entry (no or corrupt `config.json`: docker-machine can neither use nor remove
//! it) or one that cannot be opened is dropped and the machine `abandoned`, with a loud
//! event naming the driver and the machine name to look for at the provider. Nothing is
//! done when the machine is gone already or its deployment is not tearing down.

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::TeardownMachinePayload;

/// Removes one machine: a `status` and an `rm`, each within the docker-machine call
/// limit (--machine-timeout, 10m).
pub struct TeardownMachine;

impl JobType for TeardownMachine {
    const KIND: JobKind = JobKind::named("teardown_machine");
    type Payload = TeardownMachinePayload;
    const TIMEOUT: Duration = Duration::from_secs(30 * MINUTE);
}

impl KindPayload for TeardownMachinePayload {
    type Kind = TeardownMachine;
}

#[cfg(feature = "worker")]
mod handler {
    use crate::kinds::provision_machine::handler::{Settled, settle};
    use crate::runtime::handling::{env, store_error};
    use crate::runtime::session::{Loaded, MachineSession, fence};
    use crate::{MachineRemoval, MachineRow, MachineState, TeardownMachinePayload};
    use lc_worker::{Handler, JobContext, JobError};

    use super::TeardownMachine;

    /// What a worker does with a `teardown_machine` job (see the file's doc).
    impl Handler for TeardownMachine {
        async fn run(ctx: &JobContext, payload: TeardownMachinePayload) -> Result<(), JobError> {
            let store = &env(ctx)?.store;
            let removal = store
                .begin_machine_removal(payload.deployment_id, payload.machine_id)
                .await
                .map_err(|err| store_error("start the machine's removal", err))?;
            let (name, spec, machine) = match removal {
                MachineRemoval::Proceed {
                    name,
                    spec,
                    machine,
                } => (name, spec, machine),
                MachineRemoval::Skip(why) => {
                    ctx.log(&why).await;
                    return Ok(());
                }
            };
            // Credentials that are not set here are left out: rm works from the store entry.
            let session =
                MachineSession::open(ctx, payload.deployment_id, &name, &spec, false).await?;
            store
                .set_machine(
                    machine.id,
                    &MachineState::Removing.reachable_from(),
                    MachineState::Removing,
                    "teardown",
                    Some(ctx.job().id),
                )
                .await
                .map_err(|err| store_error("mark the machine removing", err))?;
            match remove_machine(ctx, &session, &machine).await? {
                Gone::Removed(message) => {
                    store
                        .machine_removed(machine.id, fence(ctx), &message)
                        .await
                        .map_err(|err| store_error("record the machine removed", err))?;
                    ctx.log(&format!("machine {}: {message}", machine.name))
                        .await;
                }
                Gone::Abandoned(message) => {
                    tracing::warn!(machine = %machine.name, "{message}");
                    ctx.log(&message).await;
                    store
                        .machine_abandoned(machine.id, fence(ctx), &message)
                        .await
                        .map_err(|err| store_error("record the machine abandoned", err))?;
                }
            }
            Ok(())
        }
    }

    /// How a machine left.
    enum Gone {
        Removed(String),
        /// Its state was unusable: dropped, its cloud resource may remain (the message says
        /// where to look).
        Abandoned(String),
    }

    fn abandoned(machine: &MachineRow, why: &str) -> Gone {
        Gone::Abandoned(format!(
            "machine {name} ABANDONED: {why}. Its entry was dropped; a cloud resource, if one was created, may still exist: look for a machine named {name} at driver {driver}, delete it there, then run `lc deploy ack`",
            name = machine.name,
            driver = machine.driver.as_deref().unwrap_or("?"),
        ))
    }

    async fn remove_machine(
        ctx: &JobContext,
        session: &MachineSession,
        machine: &MachineRow,
    ) -> Result<Gone, JobError> {
        let name = &machine.name;
        match session.load(ctx, machine).await? {
            Loaded::Nothing => {
                return Ok(Gone::Removed(
                    "no docker-machine state was recorded for it: nothing to remove".into(),
                ));
            }
            Loaded::Unreadable(reason) => {
                return Ok(abandoned(
                    machine,
                    &format!("its recorded docker-machine state cannot be read ({reason})"),
                ));
            }
            Loaded::Entry => {}
        }
        match settle(ctx, &session.cli, name).await? {
            Settled::Missing => {
                return Ok(Gone::Removed(
                    "docker-machine does not know it: nothing to remove".into(),
                ));
            }
            Settled::Broken(reason) => {
                session.store.remove_entry(name).map_err(|err| {
                    JobError::retryable_from("cannot drop a broken store entry", err)
                })?;
                return Ok(abandoned(
                    machine,
                    &format!("its docker-machine store entry is broken ({reason})"),
                ));
            }
            Settled::Status(_) => {}
        }
        match session.cli.rm(ctx, name).await {
            Ok(true) => Ok(Gone::Removed("removed (docker-machine rm)".into())),
            Ok(false) => Ok(Gone::Removed(
                "docker-machine does not know it: nothing to remove".into(),
            )),
            Err(err) if err.broken_entry() => {
                session.store.remove_entry(name).map_err(|err| {
                    JobError::retryable_from("cannot drop a broken store entry", err)
                })?;
                Ok(abandoned(
                    machine,
                    &format!("docker-machine cannot remove its broken store entry ({err})"),
                ))
            }
            Err(crate::runtime::machine::MachineError::Cancelled { .. }) => {
                Err(JobError::Cancelled)
            }
            Err(err) => {
                // Keep what rm changed (a partly removed machine) for the next attempt.
                session.save(ctx, machine).await?;
                Err(JobError::retryable_from("docker-machine rm failed", err))
            }
        }
    }
}
