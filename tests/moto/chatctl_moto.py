"""What the tests teach moto before it starts (loaded by tests/src/moto.rs, never by chatctl).

moto 5.2's CloudFormation has no AWS::Lambda::Alias (it warns and creates nothing) and its
AWS::Lambda::Version answers no Fn::GetAtt, so a template whose triggers invoke a `live` alias
cannot be created. Both are added here on top of moto's own Lambda backend, with the documented
CloudFormation behaviour: Ref of an alias is its ARN, GetAtt Version.Version is the published
version number, an alias update moves it to the new version.

moto's DynamoDB TagResource appends: a retried call (its first answer lost) lists every tag
twice. AWS's TagResource sets each key (a tag key is unique per resource), so it does here.

moto's API Gateway v2 CreateRoute makes a second route with a key the API already has; AWS
answers ConflictException (409), which a retried CreateRoute whose first answer was lost meets.

moto's Lambda CreateEventSourceMapping means to refuse a second mapping of one SQS queue to one
function but looks the pair up under a literal string, so it never does; AWS answers
ResourceConflictException (409) "An event source mapping with SQS arn … and function … already
exists", which a retried create meets. Refused here as AWS does.
"""

from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaBackend, LambdaVersion
from moto.apigatewayv2.exceptions import APIGatewayV2Error
from moto.apigatewayv2.models import Api
from moto.dynamodb.models import DynamoDBBackend
from moto.awslambda.utils import get_backend
from moto.core.common_models import CloudFormationModel
from moto.utilities.docker_utilities import DockerModel

# A published version is a copy of its function made without DockerModel.__init__, so SNS
# delivering to an alias ARN (`…:function:NAME:live`) crashed moto with a 500 where delivery to
# the unqualified function only logs that there is no Docker. The class default makes the copy
# behave like its function.
DockerModel._DockerModel__docker_client = None  # type: ignore[attr-defined]


def _tag_table(self: DynamoDBBackend, arn: str, tags: dict[str, str]) -> None:
    for table in self.tables.values():
        if table.table_arn == arn:
            kept = [t for t in table.tags if t["Key"] not in tags]
            table.tags = kept + [{"Key": k, "Value": v} for k, v in tags.items()]


DynamoDBBackend.tag_resource = _tag_table  # type: ignore[method-assign]


class _RouteConflict(APIGatewayV2Error):
    code = 409

    def __init__(self) -> None:
        super().__init__(
            "ConflictException", "Unable to complete operation due to concurrent modification"
        )


_create_route = Api.create_route


def _create_route_once(self: Api, *args: Any, **kwargs: Any) -> Any:
    key = kwargs.get("route_key")
    if any(route.route_key == key for route in self.routes.values()):
        raise _RouteConflict()
    return _create_route(self, *args, **kwargs)


Api.create_route = _create_route_once  # type: ignore[method-assign]


class _MappingConflict(LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


_create_mapping = LambdaBackend.create_event_source_mapping


def _create_mapping_once(self: LambdaBackend, spec: dict[str, Any]) -> Any:
    source = spec.get("EventSourceArn")
    if source and ":sqs:" in source and spec.get("FunctionName"):
        func = self._lambdas.get_function_by_name_or_arn_with_qualifier(spec["FunctionName"])
        for esm in self._event_source_mappings.values():
            if esm.event_source_arn == source and esm.function_arn == func.function_arn:
                raise _MappingConflict(
                    f"An event source mapping with SQS arn ({source}) and function "
                    f"({spec['FunctionName']}) already exists. Please update or delete the "
                    f"existing mapping with UUID {esm.uuid}"
                )
    return _create_mapping(self, spec)


LambdaBackend.create_event_source_mapping = _create_mapping_once  # type: ignore[method-assign]


def _version_attribute(self: LambdaVersion, name: str) -> Any:
    if name == "Version":
        return self.version
    raise NotImplementedError(f"'{name}' is not an attribute of AWS::Lambda::Version")


LambdaVersion.get_cfn_attribute = _version_attribute  # type: ignore[method-assign]
LambdaVersion.has_cfn_attr = classmethod(lambda cls, attr: attr == "Version")  # type: ignore[method-assign]


class LambdaAliasResource(CloudFormationModel):
    # moto files every model under the service its module names (`moto.<service>.…`).
    __module__ = "moto.awslambda.chatctl"

    def __init__(self, account_id: str, region: str, function: str, name: str, arn: str):
        self.account_id = account_id
        self.region = region
        self.function = function
        self.name = name
        self.arn = arn

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-lambda-alias.html
        return "AWS::Lambda::Alias"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in ("AliasArn",)

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        if attribute_name == "AliasArn":
            return self.arn
        raise NotImplementedError(attribute_name)

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> "LambdaAliasResource":
        p = cloudformation_json["Properties"]
        alias = get_backend(account_id, region_name).create_alias(
            name=p["Name"],
            function_name=p["FunctionName"],
            function_version=str(p["FunctionVersion"]),
            description=p.get("Description", ""),
            routing_config=p.get("RoutingConfig"),
        )
        return cls(account_id, region_name, p["FunctionName"], p["Name"], alias.arn)

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[misc]
        cls,
        original_resource: "LambdaAliasResource",
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> "LambdaAliasResource":
        p = cloudformation_json["Properties"]
        get_backend(account_id, region_name).update_alias(
            name=p["Name"],
            function_name=p["FunctionName"],
            function_version=str(p["FunctionVersion"]),
            description=p.get("Description"),
            routing_config=p.get("RoutingConfig"),
        )
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> None:
        p = cloudformation_json["Properties"]
        try:
            get_backend(account_id, region_name).delete_alias(p["Name"], p["FunctionName"])
        except Exception:  # the function (and its aliases) may be gone already
            pass
