"""general: getApiKeyDetails."""

from ..jsonrpc import API_SCOPES, Params, RpcContext, rpc_method


@rpc_method("general", "getApiKeyDetails")
def get_api_key_details(ctx: RpcContext, params: dict) -> dict:
    Params(params, allowed=())
    key = ctx.api_key
    scopes = set(key.scopes)
    enabled = [api for api, needs in API_SCOPES.items() if api != "general" and set(needs) & scopes]
    return {
        "enabledApis": ["general", *enabled],
        "createdAt": key.created_at.isoformat(),
        # GZ Console additions: never the secret, only what identifies the key
        "name": key.name,
        "prefix": key.prefix,
        "scopes": sorted(scopes),
        "companyId": str(key.company_id),
    }
