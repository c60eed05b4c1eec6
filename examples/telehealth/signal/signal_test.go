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

// meshParty runs a session for a mesh caller and returns its ends.
func meshParty(t *testing.T, ctx context.Context, s *Server, join Message) (send, recv chan Message) {
	t.Helper()
	up, down := make(chan Message, 8), make(chan Message, 8)
	go s.Serve(ctx, memConn{in: up, out: down}, Caller{ID: "spiffe://medmesh.local/ns/default/svc/clinician-app", Door: "grpc", Mesh: true})
	up <- join
	return up, down
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
	_, third := meshParty(t, ctx, s, join)
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
