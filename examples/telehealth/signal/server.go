package signal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"medmesh/api/wire"
	"medmesh/examples/meshapp"
)

// Conn is one party's signalling connection, whatever the door.
type Conn interface {
	Send(ctx context.Context, m Message) error
	Recv(ctx context.Context) (Message, error)
}

// Caller is who is on the other end of a Conn, as far as the server can
// tell.
type Caller struct {
	// ID is the caller's SPIFFE ID from its verified client certificate
	// (the mesh door), or "browser".
	ID string
	// Site is the caller's site, from its SPIFFE ID; browsers are at the
	// server's own site. It picks the TURN relay.
	Site string
	// Door is "grpc" or "websocket".
	Door string
	// Mesh is true for callers the mesh authenticated and authorized
	// (intentions); only they may open a call.
	Mesh bool
}

// CallerFromContext is the caller of a gRPC stream: the SPIFFE ID the
// mesh verified, which the server's RBAC (built from intentions) already
// admitted. Without a client certificate (a mesh run with --mtls=false)
// the caller is "plaintext" and not a mesh caller.
func CallerFromContext(ctx context.Context) Caller {
	c := Caller{ID: meshapp.CallerID(ctx), Door: "grpc"}
	// grpc-go's xDS credentials verified the certificate against the
	// bundle before the call got here; a SPIFFE ID means a mesh caller.
	if _, _, _, site, ok := wire.ParseServiceID(c.ID); ok {
		c.Mesh, c.Site = true, site
	}
	return c
}

// RelayFinder returns the TURN URLs of a site's relays
// (turnrelay.Consul finds them in the catalog).
type RelayFinder interface {
	RelayURLs(ctx context.Context, site string) ([]string, error)
}

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// Site is the server's own site: a browser's relay is looked up there.
	Site string
	// Relays finds each party's site relay; nil hands out no ICE servers
	// (host candidates only).
	Relays RelayFinder
	// TURNSecret is the secret shared with the relays: each party gets
	// time-limited credentials made from it (TURN REST style), so only
	// admitted parties can allocate on a relay.
	TURNSecret []byte
	// TURNCredentialTTL is how long those credentials last (default 1h).
	TURNCredentialTTL time.Duration
	// PlaintextOpens lets gRPC callers without a certificate open calls:
	// for a mesh run with --mtls=false (development), where nobody has
	// an identity and intentions are not enforced.
	PlaintextOpens bool
}

// Server pairs the parties of each call and relays between them.
type Server struct {
	opts  Options
	log   *slog.Logger
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	kind    string
	invite  string
	parties []*party
}

type party struct {
	role   string
	who    Caller
	out    chan Message
	cancel context.CancelCauseFunc
}

// outQueue bounds what waits to be written to one party. A party that
// cannot keep up with signalling (a few dozen messages per call) is
// broken, and is dropped rather than allowed to hold up the other one.
const outQueue = 64

var (
	callIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,128}$`)
	kindPattern   = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
)

// NewServer returns a signalling server.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.TURNCredentialTTL <= 0 {
		o.TURNCredentialTTL = time.Hour
	}
	return &Server{opts: o, log: o.Logger, calls: map[string]*call{}}
}

// Serve runs one party's session until it leaves, the other side of c
// fails or ctx ends. The first message must be a join.
func (s *Server) Serve(ctx context.Context, c Conn, who Caller) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	first, err := c.Recv(ctx)
	if err != nil {
		return err
	}
	if err := CheckJoin(first); err != nil {
		_ = c.Send(ctx, Message{Type: TypeError, Error: err.Error()})
		return err
	}
	ice, err := s.iceServers(ctx, who.Site)
	if err != nil {
		// Host candidates still work inside a site; a call without its
		// relay is worse, not impossible.
		s.log.Warn("no TURN relay for the call", "site", who.Site, "err", err)
	}
	p := &party{role: first.Role, who: who, out: make(chan Message, outQueue), cancel: cancel}
	if err := s.join(first, p, ice); err != nil {
		_ = c.Send(ctx, Message{Type: TypeError, Error: err.Error()})
		return err
	}
	s.log.Info("joined", "caller", who.ID, "door", who.Door, "role", first.Role, "kind", first.Kind)
	defer func() {
		s.leave(first.Call, p)
		s.log.Info("left", "caller", who.ID, "door", who.Door, "role", first.Role, "kind", first.Kind)
	}()

	writeErr := make(chan error, 1)
	go func() { writeErr <- s.write(ctx, c, p) }()
	readErr := make(chan error, 1)
	go func() { readErr <- s.readLoop(ctx, c, p, first.Call) }()
	// A gRPC stream's Recv cannot be interrupted: when the session ends
	// for another reason (its queue overflowed, a write failed) the
	// handler returns, which ends the stream and that Recv with it.
	select {
	case err = <-readErr:
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	// The writer must be done before the session returns: a gRPC stream
	// may not be written once its handler has returned.
	cancel(err)
	<-writeErr
	return err
}

// readLoop relays p's messages until it leaves or breaks the protocol.
func (s *Server) readLoop(ctx context.Context, c Conn, p *party, callID string) error {
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch m.Type {
		case TypeDescription, TypeCandidate:
			// Only the relayed part goes on: a party cannot make the
			// other believe the server said something.
			s.relay(callID, p, Message{Type: m.Type, Description: m.Description, Candidate: m.Candidate})
		default:
			err := fmt.Errorf("message type %q: a party may send only %q and %q after joining", m.Type, TypeDescription, TypeCandidate)
			p.send(Message{Type: TypeError, Error: err.Error()})
			return err
		}
	}
}

// write sends p's queue to c until ctx ends or a write fails. When the
// session ends, what is still queued (an error message, a bye) is sent
// first, with a context of its own: the session's is cancelled.
func (s *Server) write(ctx context.Context, c Conn, p *party) error {
	for {
		select {
		case <-ctx.Done():
			flush(c, p, nil)
			return nil
		case m := <-p.out:
			if ctx.Err() != nil {
				flush(c, p, &m)
				return nil
			}
			if err := c.Send(ctx, m); err != nil {
				if ctx.Err() != nil {
					// Cancelled while sending: m goes with the flush.
					flush(c, p, &m)
					return nil
				}
				p.cancel(err)
				return err
			}
		}
	}
}

// flush sends first (when not nil) and then what is queued for p, until
// the queue is empty or a send fails.
func flush(c Conn, p *party, first *Message) {
	for {
		var m Message
		if first != nil {
			m, first = *first, nil
		} else {
			select {
			case m = <-p.out:
			default:
				return
			}
		}
		fctx, fcancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Send(fctx, m)
		fcancel()
		if err != nil {
			return
		}
	}
}

// send queues m for the party; a full queue drops the party.
func (p *party) send(m Message) {
	select {
	case p.out <- m:
	default:
		p.cancel(errors.New("signalling queue full"))
	}
}

// CheckJoin applies the server's rules for a join (its type, the call ID,
// the role, the kind of call); a party may check its own before it
// dials. The errors name the field, never quote the call ID.
func CheckJoin(m Message) error {
	switch {
	case m.Type != TypeJoin:
		return fmt.Errorf("first message: type is %q, want %q", m.Type, TypeJoin)
	case !callIDPattern.MatchString(m.Call):
		return errors.New("join: call must be 8-128 characters of A-Z a-z 0-9 . _ -")
	case m.Role != RoleClinician && m.Role != RolePatient:
		return fmt.Errorf("join: role is %q, want %q or %q", m.Role, RoleClinician, RolePatient)
	case !kindPattern.MatchString(m.Kind):
		return errors.New("join: kind must be 1-64 characters of a-z 0-9 -")
	}
	return nil
}

// join adds p to its call and queues, in this order, its joined message
// and the peer messages of both parties when it is the second.
//
// Two mesh parties meet by joining the same call ID: the first opens the
// call, the second (a mesh caller needs no invite) makes it a pair. A
// call pairs one clinician with one patient. A mesh caller that joins
// again in the role it already holds (its program restarted before the
// server noticed its old stream was gone) replaces its old session: that
// one gets an error and ends, and the other party, whose peer
// connection was with the old session, gets a bye and joins again.
func (s *Server) join(m Message, p *party, ice []ICEServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[m.Call]
	switch {
	case c == nil && !p.who.Mesh:
		// Browsers are not mesh callers: they come with the invite a
		// caller the mesh admitted got for this call.
		return errors.New("join: no such call open (a clinician's service opens it and hands out the invite)")
	case c == nil:
		inv, err := newInvite()
		if err != nil {
			return err
		}
		c = &call{kind: m.Kind, invite: inv}
		s.calls[m.Call] = c
	case !p.who.Mesh && subtle.ConstantTimeCompare([]byte(m.Invite), []byte(c.invite)) != 1:
		return errors.New("join: invite is not valid for this call")
	case c.kind != m.Kind:
		return fmt.Errorf("join: kind %q differs from the call's %q", m.Kind, c.kind)
	}
	if old := c.party(m.Role); old != nil && p.who.Mesh && old.who.Mesh && old.who.ID == p.who.ID {
		c.supersede(old)
	}
	switch {
	case len(c.parties) == 2:
		return errors.New("join: the call already has two parties")
	case c.party(m.Role) != nil:
		return fmt.Errorf("join: the call already has a %s", m.Role)
	}
	joined := Message{Type: TypeJoined, ICEServers: ice}
	if p.who.Mesh {
		joined.Invite = c.invite
	}
	p.send(joined)
	c.parties = append(c.parties, p)
	if len(c.parties) == 2 {
		first, second := c.parties[0], c.parties[1]
		first.send(Message{Type: TypePeer, Role: second.role, Offerer: true})
		second.send(Message{Type: TypePeer, Role: first.role})
	}
	return nil
}

// party is the call's party in role, or nil.
func (c *call) party(role string) *party {
	for _, p := range c.parties {
		if p.role == role {
			return p
		}
	}
	return nil
}

// member says whether p is one of the call's parties (a party the call
// let go of, after a bye, is not).
func (c *call) member(p *party) bool {
	for _, q := range c.parties {
		if q == p {
			return true
		}
	}
	return false
}

// supersede ends old's session (its caller joined again) and lets go of
// the other party with a bye: its peer connection was with old.
func (c *call) supersede(old *party) {
	old.send(Message{Type: TypeError, Error: "superseded: the same caller joined this call again in the same role"})
	old.cancel(errors.New("superseded by a new join of the same caller"))
	c.parties = slices.DeleteFunc(c.parties, func(q *party) bool { return q == old })
	c.dropAll()
}

// dropAll sends every party left in the call a bye and lets go of them.
// A peer connection is set up once per pairing: a party that got a bye
// joins again (a new session) to be paired again, and a session the
// call let go of is never paired nor relayed to.
func (c *call) dropAll() {
	for _, q := range c.parties {
		q.send(Message{Type: TypeBye})
	}
	c.parties = nil
}

func (s *Server) relay(callID string, from *party, m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[callID]
	if c == nil || !c.member(from) {
		// The call let go of this party (a bye): what it still sends
		// belongs to a pairing that is over.
		return
	}
	for _, p := range c.parties {
		if p != from {
			p.send(m)
			return
		}
	}
	// Nobody to relay to yet: descriptions come only after the peer
	// message, so this is a misbehaving party; tell it.
	from.send(Message{Type: TypeError, Error: "nothing to relay to: the other party has not joined"})
}

// leave takes p out of its call: the other party gets a bye and is let
// go of too (it joins again for a new pairing), and the call, now empty,
// is closed.
func (s *Server) leave(callID string, p *party) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[callID]
	if c == nil || !c.member(p) {
		return
	}
	c.parties = slices.DeleteFunc(c.parties, func(q *party) bool { return q == p })
	c.dropAll()
	delete(s.calls, callID)
}

// Calls is the number of open calls (for tests and status).
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func newInvite() (string, error) {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// iceServers are the site's relays with fresh TURN credentials.
func (s *Server) iceServers(ctx context.Context, site string) ([]ICEServer, error) {
	if s.opts.Relays == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	urls, err := s.opts.Relays.RelayURLs(ctx, site)
	if err != nil || len(urls) == 0 {
		return nil, err
	}
	if len(s.opts.TURNSecret) == 0 {
		return nil, errors.New("relays found but no TURN secret configured to make credentials for them")
	}
	user, pass, err := turn.GenerateLongTermCredentials(string(s.opts.TURNSecret), s.opts.TURNCredentialTTL)
	if err != nil {
		return nil, err
	}
	return []ICEServer{{URLs: urls, Username: user, Credential: pass}}, nil
}
