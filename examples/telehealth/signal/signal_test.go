package signal

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"medmesh/internal/testutil"
)

// memConn is one end of an in-memory signalling connection.
type memConn struct {
	in  chan Message
	out chan Message
}

func (c memConn) Send(ctx context.Context, m Message) error {
	select {
	case c.out <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c memConn) Recv(ctx context.Context) (Message, error) {
	select {
	case m, ok := <-c.in:
		if !ok {
			return Message{}, io.EOF
		}
		return m, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// meshParty runs a session for the mesh caller clinician-app and returns
// its ends.
func meshParty(t *testing.T, ctx context.Context, s *Server, join Message) (send, recv chan Message) {
	t.Helper()
	return meshPartyAs(t, ctx, s, "clinician-app", join)
}

// meshPartyAs runs a session for a mesh caller of service svc; closing
// send ends it, as a party hanging up does.
func meshPartyAs(t *testing.T, ctx context.Context, s *Server, svc string, join Message) (send, recv chan Message) {
	t.Helper()
	ss := startSession(ctx, s, svc, join)
	return ss.up, ss.down
}

// session is one party's session: what it sends (close up to hang up),
// what it gets, and what Serve returned once it has.
type session struct {
	up, down chan Message
	done     chan error
}

func startSession(ctx context.Context, s *Server, svc string, join Message) *session {
	ss := &session{up: make(chan Message, 8), down: make(chan Message, 8), done: make(chan error, 1)}
	go func() {
		ss.done <- s.Serve(ctx, memConn{in: ss.up, out: ss.down}, Caller{ID: "spiffe://medmesh.local/ns/default/svc/" + svc, Door: "grpc", Mesh: true})
	}()
	ss.up <- join
	return ss
}

// expect is the session's next message, which must be of type typ.
func (ss *session) expect(t *testing.T, ctx context.Context, typ string) Message {
	t.Helper()
	m := next(t, ctx, chanRecv(ss.down))
	if m.Type != typ {
		t.Fatalf("got %+v; want a %q message", m, typ)
	}
	return m
}

// ended waits for the session's Serve to return.
func (ss *session) ended(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case err := <-ss.done:
		return err
	case <-ctx.Done():
		t.Fatal("the session did not end")
		return nil
	}
}

func next(t *testing.T, ctx context.Context, recv func(context.Context) (Message, error)) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := recv(ctx)
	if err != nil {
		t.Fatalf("waiting for a message: %v", err)
	}
	return m
}

func chanRecv(c chan Message) func(context.Context) (Message, error) {
	return func(ctx context.Context) (Message, error) { return memConn{in: c}.Recv(ctx) }
}

func dialBrowser(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func wsRecv(c *websocket.Conn) func(context.Context) (Message, error) {
	return func(ctx context.Context) (Message, error) {
		var m Message
		err := wsjson.Read(ctx, c, &m)
		return m, err
	}
}

// A browser joins only a call a mesh caller opened, with its invite; the
// first party offers; a third party and a wrong invite are refused; the
// log names callers and call kinds, never call IDs or descriptions.
func TestCallPairingAndInvites(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	s := NewServer(Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	web := httptest.NewServer(s.Handler())
	defer web.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	join := Message{Type: TypeJoin, Call: "visit-secret-0001", Role: RoleClinician, Kind: "video-visit"}

	early := dialBrowser(t, ctx, web.URL)
	wsjson.Write(ctx, early, Message{Type: TypeJoin, Call: join.Call, Role: RolePatient, Kind: "video-visit", Invite: "guess"})
	if m := next(t, ctx, wsRecv(early)); m.Type != TypeError || !strings.Contains(m.Error, "no such call") {
		t.Errorf("browser before the call is open: %+v", m)
	}

	up, down := meshParty(t, ctx, s, join)
	joined := next(t, ctx, chanRecv(down))
	if joined.Type != TypeJoined || joined.Invite == "" {
		t.Fatalf("mesh party: %+v; want joined with an invite", joined)
	}
	wrong := dialBrowser(t, ctx, web.URL)
	wsjson.Write(ctx, wrong, Message{Type: TypeJoin, Call: join.Call, Role: RolePatient, Kind: "video-visit", Invite: "guess"})
	if m := next(t, ctx, wsRecv(wrong)); m.Type != TypeError || !strings.Contains(m.Error, "invite") {
		t.Errorf("wrong invite: %+v", m)
	}

	b := dialBrowser(t, ctx, web.URL)
	wsjson.Write(ctx, b, Message{Type: TypeJoin, Call: join.Call, Role: RolePatient, Kind: "video-visit", Invite: joined.Invite})
	if m := next(t, ctx, wsRecv(b)); m.Type != TypeJoined || m.Invite != "" {
		t.Errorf("browser joined: %+v (a browser gets no invite)", m)
	}
	if m := next(t, ctx, chanRecv(down)); m.Type != TypePeer || !m.Offerer || m.Role != RolePatient {
		t.Errorf("first party: %+v; want peer, offerer, the patient", m)
	}
	if m := next(t, ctx, wsRecv(b)); m.Type != TypePeer || m.Offerer || m.Role != RoleClinician {
		t.Errorf("second party: %+v; want peer, not offerer, the clinician", m)
	}

	// Relayed as it is, and nothing else is taken from the sender.
	up <- Message{Type: TypeDescription, Description: []byte(`{"type":"offer","sdp":"v=0..."}`), Error: "forged"}
	if m := next(t, ctx, wsRecv(b)); m.Type != TypeDescription || string(m.Description) != `{"type":"offer","sdp":"v=0..."}` || m.Error != "" {
		t.Errorf("relayed: %+v", m)
	}
	_, third := meshPartyAs(t, ctx, s, "other-app", join)
	if m := next(t, ctx, chanRecv(third)); m.Type != TypeError || !strings.Contains(m.Error, "two parties") {
		t.Errorf("third party: %+v; want refused", m)
	}
	if s.Calls() != 1 {
		t.Errorf("%d calls open; want 1", s.Calls())
	}

	// The browser hangs up: the clinician gets a bye.
	b.Close(websocket.StatusNormalClosure, "")
	if m := next(t, ctx, chanRecv(down)); m.Type != TypeBye {
		t.Errorf("after the browser left: %+v; want bye", m)
	}
	for _, bad := range []string{join.Call, "v=0", joined.Invite} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("log shows %q:\n%s", bad, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "caller=browser door=websocket role=patient kind=video-visit") {
		t.Errorf("log does not record the browser's join:\n%s", logs.String())
	}
}

// Two mesh parties meet by joining the same call ID, neither with an
// invite: the first opens the call and offers. A role is held once. A
// call lasts one pairing: when a party leaves, the other gets a bye and
// the call closes, both join again to meet again, and what an old
// session still sends reaches nobody. A caller joining again in the role
// it holds (restarted before its old stream was seen to go) replaces its
// old session, and the other party is let go of to join again.
func TestMeshPartiesMeetAgain(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	s := NewServer(Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const callID = "demo-call-0001"
	clin := Message{Type: TypeJoin, Call: callID, Role: RoleClinician, Kind: "video-visit"}
	pat := Message{Type: TypeJoin, Call: callID, Role: RolePatient, Kind: "video-visit"}
	var invites []string

	c1 := startSession(ctx, s, "clinician-station", clin)
	invites = append(invites, c1.expect(t, ctx, TypeJoined).Invite)
	other := startSession(ctx, s, "other-station", clin)
	if m := other.expect(t, ctx, TypeError); !strings.Contains(m.Error, "already has a clinician") {
		t.Errorf("a second clinician, another caller: %q; want refused", m.Error)
	}
	p1 := startSession(ctx, s, "patient-app", pat)
	if m := p1.expect(t, ctx, TypeJoined); m.Invite == "" {
		t.Error("the second mesh party got no invite")
	}
	if m := c1.expect(t, ctx, TypePeer); !m.Offerer || m.Role != RolePatient {
		t.Errorf("first party: %+v; want the offer to make, to the patient", m)
	}
	if m := p1.expect(t, ctx, TypePeer); m.Offerer || m.Role != RoleClinician {
		t.Errorf("second party: %+v; want the clinician's offer to wait for", m)
	}
	c1.up <- Message{Type: TypeDescription, Description: []byte(`{"type":"offer"}`)}
	if m := p1.expect(t, ctx, TypeDescription); string(m.Description) != `{"type":"offer"}` {
		t.Errorf("relayed: %s", m.Description)
	}

	// The patient's program stops: the clinician gets a bye, the call
	// closes.
	close(p1.up)
	c1.expect(t, ctx, TypeBye)
	if n := s.Calls(); n != 0 {
		t.Errorf("%d calls open after a party left; want 0", n)
	}

	// Both join again, the patient first this time, and meet.
	p2 := startSession(ctx, s, "patient-app", pat)
	invites = append(invites, p2.expect(t, ctx, TypeJoined).Invite)
	c2 := startSession(ctx, s, "clinician-station", clin)
	c2.expect(t, ctx, TypeJoined)
	if m := p2.expect(t, ctx, TypePeer); !m.Offerer {
		t.Errorf("the patient, first this time: %+v; want the offer to make", m)
	}
	c2.expect(t, ctx, TypePeer)

	// The clinician's old session, let go of, still sends a candidate and
	// then hangs up: neither reaches the new pairing.
	c1.up <- Message{Type: TypeCandidate, Candidate: []byte(`"stale"`)}
	close(c1.up)
	if err := c1.ended(t, ctx); err != nil {
		t.Errorf("old session: %v", err)
	}
	p2.up <- Message{Type: TypeCandidate, Candidate: []byte(`"fresh"`)}
	if m := c2.expect(t, ctx, TypeCandidate); string(m.Candidate) != `"fresh"` {
		t.Errorf("the new clinician got %s; want only the new patient's candidate", m.Candidate)
	}

	// The patient's program restarts and joins before its old stream is
	// seen to go: the new session replaces the old one, the clinician is
	// let go of and joins again, and they meet.
	p3 := startSession(ctx, s, "patient-app", pat)
	invites = append(invites, p3.expect(t, ctx, TypeJoined).Invite)
	if m := p2.expect(t, ctx, TypeError); !strings.Contains(m.Error, "superseded") {
		t.Errorf("old patient session: %q; want superseded", m.Error)
	}
	if err := p2.ended(t, ctx); err == nil {
		t.Error("the superseded session ended without an error")
	}
	c2.expect(t, ctx, TypeBye)
	close(c2.up)
	c3 := startSession(ctx, s, "clinician-station", clin)
	c3.expect(t, ctx, TypeJoined)
	p3.expect(t, ctx, TypePeer)
	c3.expect(t, ctx, TypePeer)
	if m := startSession(ctx, s, "other-station", clin).expect(t, ctx, TypeError); !strings.Contains(m.Error, "two parties") {
		t.Errorf("a third party: %q; want refused", m.Error)
	}
	if n := s.Calls(); n != 1 {
		t.Errorf("%d calls open; want 1", n)
	}
	for _, bad := range append(invites, callID, "stale", "fresh") {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("log shows %q:\n%s", bad, logs.String())
		}
	}
}

// The first message must be a valid join; errors name the field.
func TestJoinValidation(t *testing.T) {
	s := NewServer(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{Message{Type: TypeCandidate}, "first message"},
		{Message{Type: TypeJoin, Call: "short", Role: RolePatient, Kind: "video-visit"}, "call must be"},
		{Message{Type: TypeJoin, Call: "visit-0000-valid", Role: "nurse", Kind: "video-visit"}, "role"},
		{Message{Type: TypeJoin, Call: "visit-0000-valid", Role: RolePatient, Kind: "Video Visit"}, "kind"},
	} {
		_, down := meshParty(t, ctx, s, tc.m)
		if m := next(t, ctx, chanRecv(down)); m.Type != TypeError || !strings.Contains(m.Error, tc.want) {
			t.Errorf("%+v: got %+v, want an error naming %q", tc.m, m, tc.want)
		}
	}
}

// The page is served with a strict content security policy.
func TestPageServed(t *testing.T) {
	web := httptest.NewServer(NewServer(Options{}).Handler())
	defer web.Close()
	for _, path := range []string{"/", "/app.js", "/frame.js"} {
		resp, err := http.Get(web.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %s, %d bytes, CSP %q", path, resp.Status, len(body), resp.Header.Get("Content-Security-Policy"))
		}
	}
}
