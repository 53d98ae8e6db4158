"""auth layer of vwproxy; see DESIGN.md "Layers" (imports only `kube`) and decision 6.

Who is asking (authentication) and may they (authorization), as kube-apiserver and kcp answer:

  identity.py           User, ANONYMOUS, kcp's scoping extras, service_account_user()
  keys.py               the ServiceAccount signing key in the data dir
  tokens.py             ServiceAccount tokens: issue() / verify(), kcp's cluster claim
  tokenrequest.py       the TokenRequest subresource's validation and response
  static.py             --token-file style static tokens
  oidc.py               external JWT issuers (structured AuthenticationConfiguration)
  authenticator.py      Authenticator.authenticate(header) -> User, AuthenticationFailed (401)
  errors.py             AuthenticationFailed
  decision.py           Attributes, Decision (allow / deny / no opinion, with a logged reason)
  requestattributes.py  attributes_for(method, path, params) -> Attributes
  rbac.py               RBACAuthorizer.authorize(user, cluster, attributes) -> Decision
  policy.py             the bootstrap policy from policies/ (or a path)
  authorizers.py        kcp's authorizers and combinators; checked() raises the anonymised 403
  escalation.py         RBAC escalation prevention on Role/ClusterRole/binding writes (escalate, bind)
  vwbinding.py          the APIExport VW's binding authorizer and whole chain
  tls.py                CA, serving certificate, admin token and kubeconfig
  stack.py              build_auth(data_dir, ...) -> AuthStack: all of it, for the server
"""
