"""Who may call the gateway: tokens, roles, the policy table and the interceptor."""

from gateway.auth.interceptor import AuthInterceptor
from gateway.auth.roles import Principal, Role, check_covers, current
from gateway.auth.tokens import Authenticator

__all__ = ["AuthInterceptor", "Authenticator", "Principal", "Role", "check_covers", "current"]
