//! One module per resource kind: its typed properties, its reader (observe), its SDK calls
//! (apply) and its CloudFormation rendering. What the stack model wants and what observe reads
//! back are the same structs, and each renderer binds every field by name, so a property added
//! to a kind and not observed or not rendered does not compile. The plan compares them as plain
//! data ([`Properties::fields`]); apply reads them by field, never by a string key.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::stack::Kind;

pub mod api;
pub mod function;
pub mod log_group;
pub mod parameter;
pub mod queue;
pub mod role;
pub mod schedule;
pub mod table;
pub mod topic;

pub use api::{Api, Integration, Route, Stage};
pub use function::{Alias, EventInvokeConfig, EventSourceMapping, Function, Permission};
pub use log_group::LogGroup;
pub use parameter::Parameter;
pub use queue::Queue;
pub use role::Role;
pub use schedule::{Schedule, ScheduleTarget};
pub use table::Table;
pub use topic::{Subscription, Topic};

/// The `chatctl:*` tags of a resource (other tags are not ours and not compared).
pub type Tags = BTreeMap<String, String>;

/// One resource's properties, by kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Properties {
    Table(Table),
    Topic(Topic),
    Queue(Queue),
    Parameter(Parameter),
    LogGroup(LogGroup),
    Api(Api),
    Role(Role),
    Function(Function),
    Alias(Alias),
    EventInvokeConfig(EventInvokeConfig),
    EventSourceMapping(EventSourceMapping),
    Schedule(Schedule),
    Integration(Integration),
    Route(Route),
    Stage(Stage),
    Permission(Permission),
    Subscription(Subscription),
}

macro_rules! accessors {
    ($($variant:ident => $as:ident, $as_mut:ident;)*) => {
        impl Properties {
            /// The kind these properties belong to.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Properties::$variant(_) => Kind::$variant,)*
                }
            }
            $(
                pub fn $as(&self) -> Option<&$variant> {
                    match self {
                        Properties::$variant(p) => Some(p),
                        _ => None,
                    }
                }
                pub fn $as_mut(&mut self) -> Option<&mut $variant> {
                    match self {
                        Properties::$variant(p) => Some(p),
                        _ => None,
                    }
                }
            )*
        }
        $(
            impl From<$variant> for Properties {
                fn from(p: $variant) -> Self {
                    Properties::$variant(p)
                }
            }
        )*
    };
}

accessors! {
    Table => table, table_mut;
    Topic => topic, topic_mut;
    Queue => queue, queue_mut;
    Parameter => parameter, parameter_mut;
    LogGroup => log_group, log_group_mut;
    Api => api, api_mut;
    Role => role, role_mut;
    Function => function, function_mut;
    Alias => alias, alias_mut;
    EventInvokeConfig => event_invoke_config, event_invoke_config_mut;
    EventSourceMapping => event_source_mapping, event_source_mapping_mut;
    Schedule => schedule, schedule_mut;
    Integration => integration, integration_mut;
    Route => route, route_mut;
    Stage => stage, stage_mut;
    Permission => permission, permission_mut;
    Subscription => subscription, subscription_mut;
}

impl Properties {
    /// The properties as the plan compares them: field name (camelCase) → value.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            // Every kind is a struct of plain fields; serializing one cannot fail.
            _ => BTreeMap::new(),
        }
    }
}
