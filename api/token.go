package api

import (
	"fmt"
	"time"
)

// Role is what a credential may do.
type Role string

// The roles, from most to least powerful.
const (
	// RoleAdmin may do everything, including managing tokens.
	RoleAdmin Role = "admin"
	// RoleEditor may read and write resources, but not tokens.
	RoleEditor Role = "editor"
	// RoleViewer may only read resources (never tokens).
	RoleViewer Role = "viewer"
	// RoleAgent is a node credential of one Agent: it may only use the
	// watch bridge as that agent. API keys with this role enrol agents.
	RoleAgent Role = "agent"
	// RoleGateway is a node credential of one Gateway, as RoleAgent.
	RoleGateway Role = "gateway"
)

// Roles lists the roles of people's tokens.
var Roles = []Role{RoleAdmin, RoleEditor, RoleViewer}

// IsNodeRole reports whether r is the role of a node credential.
func (r Role) IsNodeRole() bool { return r == RoleAgent || r == RoleGateway }

// NodeKind returns the Kind a node role belongs to ("Agent", "Gateway").
func (r Role) NodeKind() string {
	switch r {
	case RoleAgent:
		return "Agent"
	case RoleGateway:
		return "Gateway"
	}
	return ""
}

// Token is a bearer credential for the API. Its secret is shown once, in
// the response that created it; only a hash is stored.
type Token struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     TokenSpec   `json:"spec"`
	Status   TokenStatus `json:"status,omitzero"`
}

// TokenSpec is what a token grants.
type TokenSpec struct {
	// Role is admin, editor or viewer. Required.
	Role Role `json:"role"`
	// ExpiresAt, when set, is the instant after which the token is refused.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// Description says who or what the token is for.
	Description string `json:"description,omitempty"`
	// SecretHash is system: the SHA-256 of the secret, hex. Never served.
	SecretHash string `json:"secretHash,omitempty"`
	// Node names the Agent or Gateway a node credential (role agent or
	// gateway) belongs to; empty for people's tokens.
	Node string `json:"node,omitempty"`
}

// TokenStatus carries the secret in the create response only.
type TokenStatus struct {
	CommonStatus `json:",inline"`
	// Secret is the bearer token; present only in the response to the
	// request that created it, never stored.
	Secret string `json:"secret,omitempty"`
}

// GetTypeMeta implements Object.
func (t *Token) GetTypeMeta() *TypeMeta { return &t.TypeMeta }

// GetMeta implements Object.
func (t *Token) GetMeta() *ObjectMeta { return &t.Metadata }

// GetStatus implements Object.
func (t *Token) GetStatus() *CommonStatus { return &t.Status.CommonStatus }

// Default implements Object.
func (t *Token) Default() {}

// ValidateSpec implements Object.
func (t *Token) ValidateSpec() ErrorList {
	var errs ErrorList
	switch t.Spec.Role {
	case RoleAdmin, RoleEditor, RoleViewer:
		if t.Spec.Node != "" {
			errs = append(errs, FieldError{Type: FieldForbidden, Field: "spec.node", Detail: "only node credentials (role agent or gateway) name a node"})
		}
	case RoleAgent, RoleGateway:
		if msg := checkName(t.Spec.Node); msg != "" {
			errs = append(errs, invalid("spec.node", "%q %s", t.Spec.Node, msg))
		}
	case "":
		errs = append(errs, required("spec.role", "admin, editor or viewer"))
	default:
		errs = append(errs, FieldError{Type: FieldNotSupported, Field: "spec.role",
			Detail: fmt.Sprintf("unsupported role %q (use admin, editor or viewer)", t.Spec.Role)})
	}
	return append(errs, checkSecretHolder(t.Spec.Description, t.Status.Secret)...)
}

// TokenPrefix starts every bearer token, so a leaked one is recognisable.
const TokenPrefix = "kkm_"

// FormatToken builds the bearer string for a token name and its secret.
func FormatToken(name, secret string) string { return TokenPrefix + name + "." + secret }

// ParseToken splits a bearer string into the token's name and secret.
func ParseToken(bearer string) (name, secret string, ok bool) {
	return parseSecret(bearer, TokenPrefix)
}
