//! The EventBridge Scheduler schedule that runs the presence sweep every minute.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{Applier, int, text, typed};
use crate::cloudformation::cfn;
use crate::errors::{describe, is_conflict, is_not_found, is_scheduler_role_not_ready};
use crate::kinds::Properties;
use crate::observe::{ObserveError, Reader, read_error};
use crate::stack::Resource;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub schedule_expression: Option<String>,
    /// `OFF` or `FLEXIBLE`.
    pub flexible_time_window: Option<String>,
    /// `ENABLED` or `DISABLED`.
    pub state: Option<String>,
    pub target: ScheduleTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTarget {
    pub arn: Option<String>,
    pub role_arn: Option<String>,
    pub input: Option<String>,
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_s: Option<i64>,
}

// --- observe ------------------------------------------------------------------------------

pub(crate) async fn read_schedule(r: &Reader<'_>, name: &str) -> Result<(), ObserveError> {
    let out = match r.clients.scheduler.get_schedule().name(name).send().await {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(read_error(format!("schedule {name}"), e)),
    };
    let target = out.target();
    let retry = target.and_then(|t| t.retry_policy());
    r.put(
        name,
        Schedule {
            schedule_expression: out.schedule_expression().map(str::to_owned),
            flexible_time_window: out
                .flexible_time_window()
                .map(|w| w.mode().as_str().to_owned()),
            state: out.state().map(|s| s.as_str().to_owned()),
            target: ScheduleTarget {
                arn: target.map(|t| t.arn().to_owned()),
                role_arn: target.map(|t| t.role_arn().to_owned()),
                input: target.and_then(|t| t.input()).map(str::to_owned),
                maximum_retry_attempts: retry
                    .and_then(|p| p.maximum_retry_attempts())
                    .map(i64::from),
                maximum_event_age_s: retry
                    .and_then(|p| p.maximum_event_age_in_seconds())
                    .map(i64::from),
            },
        },
    );
    Ok(())
}

// --- apply --------------------------------------------------------------------------------

impl Applier<'_> {
    /// CreateSchedule, or UpdateSchedule (which replaces the schedule whole). The scheduler checks
    /// it may assume the role: a role created moments ago is waited for.
    pub(crate) async fn put_schedule(&self, r: &Resource, creating: bool) -> Result<(), String> {
        use aws_sdk_scheduler::types::{
            FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState, Target,
        };
        let schedule = typed(r, Properties::schedule)?;
        let wanted = &schedule.target;
        let target = Target::builder()
            .arn(text(&wanted.arn))
            .role_arn(text(&wanted.role_arn))
            .input(text(&wanted.input))
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(int(wanted.maximum_retry_attempts))
                    .maximum_event_age_in_seconds(int(wanted.maximum_event_age_s))
                    .build(),
            )
            .build()
            .map_err(|e| e.to_string())?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::from(
                text(&schedule.flexible_time_window).as_str(),
            ))
            .build()
            .map_err(|e| e.to_string())?;
        let state = ScheduleState::from(text(&schedule.state).as_str());
        let mut creating = creating;
        let started = Instant::now();
        loop {
            let result = if creating {
                self.clients
                    .scheduler
                    .create_schedule()
                    .name(&r.name)
                    .schedule_expression(text(&schedule.schedule_expression))
                    .flexible_time_window(window.clone())
                    .state(state.clone())
                    .target(target.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let (conflict, role) = (is_conflict(&e), is_scheduler_role_not_ready(&e));
                        (conflict, role, describe(e))
                    })
            } else {
                self.clients
                    .scheduler
                    .update_schedule()
                    .name(&r.name)
                    .schedule_expression(text(&schedule.schedule_expression))
                    .flexible_time_window(window.clone())
                    .state(state.clone())
                    .target(target.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let (conflict, role) = (is_conflict(&e), is_scheduler_role_not_ready(&e));
                        (conflict, role, describe(e))
                    })
            };
            match result {
                Ok(()) => return Ok(()),
                // An earlier, interrupted run created it: replace it with the wanted one.
                Err((true, _, _)) if creating => {
                    creating = false;
                }
                // "The execution role you provide must allow AWS EventBridge Scheduler to assume
                // the role": IAM has not propagated the new role yet.
                Err((_, true, _)) if started.elapsed() < self.patience => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err((_, _, why)) => return Err(why),
            }
        }
    }
}

// --- CloudFormation ---------------------------------------------------------------------------

impl Schedule {
    pub(crate) fn cloudformation(&self, name: &str) -> Value {
        let Schedule {
            schedule_expression,
            flexible_time_window,
            state,
            target:
                ScheduleTarget {
                    arn,
                    role_arn,
                    input,
                    maximum_retry_attempts,
                    maximum_event_age_s,
                },
        } = self;
        cfn(
            "AWS::Scheduler::Schedule",
            json!({
                "Name": name,
                "ScheduleExpression": schedule_expression,
                "FlexibleTimeWindow": { "Mode": flexible_time_window },
                "State": state,
                "Target": {
                    "Arn": arn,
                    "RoleArn": role_arn,
                    "Input": input,
                    "RetryPolicy": {
                        "MaximumRetryAttempts": maximum_retry_attempts,
                        "MaximumEventAgeInSeconds": maximum_event_age_s,
                    },
                },
            }),
        )
    }
}
