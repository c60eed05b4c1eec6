package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// joinTokens are one-time proofs of identity for workloads without
// Kubernetes or Consul ACLs: an operator asks the control plane (admin
// API, loopback) for a token for a service and hands it to the workload.
// The first node that presents it is bound to that service; the token
// then proves nothing for any other node. Only hashes are kept, so a
// memory dump or a debug page never reveals a usable token.
type joinTokens struct {
	mu     sync.Mutex
	tokens map[string]*joinToken // sha256(token) hex -> token
	now    func() time.Time
}

type joinToken struct {
	service   string
	namespace string
	expires   time.Time
	boundTo   string // node ID, once used
}

// errTokenRefused explains a refused token without echoing it.
var errTokenRefused = errors.New("join token refused")

func newJoinTokens() *joinTokens {
	return &joinTokens{tokens: map[string]*joinToken{}, now: time.Now}
}

// issue creates a token for a service, valid for ttl until first used.
func (j *joinTokens) issue(namespace, service string, ttl time.Duration) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.tokens[hashToken(tok)] = &joinToken{service: service, namespace: namespace, expires: j.now().Add(ttl)}
	return tok, nil
}

// check accepts a token for a node of a service, binding it on first use.
func (j *joinTokens) check(token, node, service string) error {
	if token == "" {
		return fmt.Errorf("%w: none presented", errTokenRefused)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	t, ok := j.tokens[hashToken(token)]
	switch {
	case !ok:
		return fmt.Errorf("%w: unknown token", errTokenRefused)
	case t.service != service:
		return fmt.Errorf("%w: the token is for service %q, the node claims %q", errTokenRefused, t.service, service)
	case t.boundTo != "" && subtle.ConstantTimeCompare([]byte(t.boundTo), []byte(node)) != 1:
		return fmt.Errorf("%w: the token was already used by another node", errTokenRefused)
	case t.boundTo == "" && j.now().After(t.expires):
		delete(j.tokens, hashToken(token))
		return fmt.Errorf("%w: the token expired unused", errTokenRefused)
	}
	t.boundTo = node
	return nil
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}
