// Package peer is a telehealth call party written with pion/webrtc: it
// joins a call through the signalling service's gRPC door (in the mesh,
// over mTLS), sets up the peer connection with the ICE servers of its
// site, and then either sends (a patient: synthetic video RTP and vitals
// frames on a DataChannel) or receives and counts (a clinician).
//
// Media never passes through the mesh's gRPC or HTTP path: it flows
// between the peers over UDP (host candidates, or the site's TURN relay),
// DTLS-SRTP encrypted end to end.
package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"medmesh/examples/telehealth/signal"
)

// Options describe one party.
type Options struct {
	Role   string // signal.RoleClinician or signal.RolePatient
	Call   string // the call ID
	Kind   string // the kind of call, e.g. "video-visit"
	Invite string // only browsers need one; kept for symmetry
	// SendVideo sends a synthetic VP8 video track (a patient without a
	// camera: the RTP is real, the picture is noise).
	SendVideo bool
	// Vitals, when set, sends vitals frames on the DataChannel once it
	// opens (a patient's monitor); every party counts what it receives.
	Vitals *VitalsSender
	// Codec encodes and decodes vitals frames (default DefaultCodec,
	// SpO2 frames of medmesh/examples/vitals/frame).
	Codec FrameCodec
	// RelayOnly uses relay candidates only: media goes through the
	// site's TURN relay (ICE transport policy "relay").
	RelayOnly bool
	// UDPPortMin and UDPPortMax fix the UDP ports of the media (host
	// candidates), so a site's firewall can open exactly those and keep
	// them apart from the mesh's HTTP and gRPC ports. Zero: any port.
	UDPPortMin, UDPPortMax uint16
	// LoopbackOnly gathers and accepts loopback candidates only (tests
	// and single-machine demos: no packet leaves the host).
	LoopbackOnly bool
	// Logger takes the party's log. pion's own messages go to it at
	// debug level only: they may quote addresses, candidates or pieces
	// of a session description, which the party's log never carries at
	// info and above.
	Logger *slog.Logger
}

// ServerError is what the signalling service said when it refused a join
// or ended the session. The service's messages name a rule or a field,
// never a call ID, an invite or a description, so they may be logged.
type ServerError struct{ Message string }

func (e *ServerError) Error() string { return e.Message }

// ErrConnectionFailed is why a call ends whose peer connection failed
// (ICE or DTLS).
var ErrConnectionFailed = errors.New("peer connection failed (ICE or DTLS)")

// Call is a party's side of a call.
type Call struct {
	o      Options
	conn   signal.ClientConn
	pc     *webrtc.PeerConnection
	log    *slog.Logger
	invite string

	sendMu sync.Mutex // gRPC streams allow one sender at a time

	connected chan struct{}
	connOnce  sync.Once
	ended     chan struct{}
	endOnce   sync.Once

	mu         sync.Mutex
	stats      Stats
	offerStart time.Time
	pending    []webrtc.ICECandidateInit
	remoteSet  bool
	err        error
}

// Join sends the join on conn, waits for the server's answer and
// starts the call: it returns once the party is in the call (the other
// party may not be yet). The call lives until Close or the end of ctx.
func Join(ctx context.Context, conn signal.ClientConn, o Options) (*Call, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Codec == nil {
		o.Codec = DefaultCodec
	}
	c := &Call{o: o, conn: conn, log: o.Logger.With("role", o.Role),
		connected: make(chan struct{}), ended: make(chan struct{})}
	c.stats.RTPPayloadTypes = map[uint8]int{}
	if err := c.send(ctx, signal.Message{Type: signal.TypeJoin, Call: o.Call, Role: o.Role, Kind: o.Kind, Invite: o.Invite}); err != nil {
		return nil, fmt.Errorf("peer: sending join: %w", err)
	}
	m, err := conn.Recv(ctx)
	if err != nil {
		return nil, fmt.Errorf("peer: waiting for joined: %w", err)
	}
	if m.Type == signal.TypeError {
		return nil, fmt.Errorf("peer: signalling refused the join: %w", &ServerError{Message: m.Error})
	}
	if m.Type != signal.TypeJoined {
		return nil, fmt.Errorf("peer: first answer is %q, want %q", m.Type, signal.TypeJoined)
	}
	c.invite = m.Invite
	c.stats.ICEServers = len(m.ICEServers)
	if c.pc, err = c.newPeerConnection(m.ICEServers); err != nil {
		return nil, err
	}
	if err := c.addMedia(ctx); err != nil {
		c.pc.Close()
		return nil, err
	}
	go c.signalLoop(ctx)
	return c, nil
}

// Invite is what a browser needs to join this call (handed to the mesh
// party that opened it).
func (c *Call) Invite() string { return c.invite }

// Connected is closed once the peer connection is connected.
func (c *Call) Connected() <-chan struct{} { return c.connected }

// Ended is closed when the call is over: the other party left, the
// signalling broke, or ICE failed. Err says why.
func (c *Call) Ended() <-chan struct{} { return c.ended }

// Err is why the call ended (nil while it runs, or after a normal bye).
func (c *Call) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close leaves the call.
func (c *Call) Close() error {
	c.end(nil)
	_ = c.conn.CloseSend()
	return c.pc.Close()
}

func (c *Call) end(err error) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.ended)
	})
}

func (c *Call) send(ctx context.Context, m signal.Message) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.conn.Send(ctx, m)
}

// newPeerConnection builds the pion peer connection for this party.
func (c *Call) newPeerConnection(servers []signal.ICEServer) (*webrtc.PeerConnection, error) {
	var se webrtc.SettingEngine
	if c.o.UDPPortMin != 0 || c.o.UDPPortMax != 0 {
		if err := se.SetEphemeralUDPPortRange(c.o.UDPPortMin, c.o.UDPPortMax); err != nil {
			return nil, fmt.Errorf("peer: UDP port range %d-%d: %w", c.o.UDPPortMin, c.o.UDPPortMax, err)
		}
	}
	// No multicast DNS: candidates carry addresses, and a site's network
	// may not pass multicast at all.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.LoggerFactory = pionLogs{c.log}
	if c.o.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetRemoteIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir))
	cfg := webrtc.Configuration{}
	for _, s := range servers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if c.o.RelayOnly {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, fmt.Errorf("peer: new peer connection: %w", err)
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			return // gathering complete; trickle needs no end marker here
		}
		b, err := json.Marshal(cand.ToJSON())
		if err == nil {
			err = c.send(context.Background(), signal.Message{Type: signal.TypeCandidate, Candidate: b})
		}
		if err != nil {
			c.log.Warn("cannot send a candidate", "err", err)
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			c.connOnce.Do(func() {
				c.mu.Lock()
				if !c.offerStart.IsZero() {
					c.stats.Setup = time.Since(c.offerStart)
				}
				c.mu.Unlock()
				c.recordPair()
				c.log.Info("connected")
				close(c.connected)
			})
		case webrtc.PeerConnectionStateFailed:
			c.end(ErrConnectionFailed)
		}
	})
	pc.OnDataChannel(c.vitalsChannel)
	pc.OnTrack(c.receiveTrack)
	return pc, nil
}

// recordPair notes the candidate types ICE selected (relay when media
// goes through TURN).
func (c *Call) recordPair() {
	sctp := c.pc.SCTP()
	if sctp == nil {
		return
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return
	}
	c.mu.Lock()
	c.stats.LocalCandidate = pair.Local.Typ.String()
	c.stats.RemoteCandidate = pair.Remote.Typ.String()
	c.mu.Unlock()
}

// signalLoop handles what the server and the other party send.
func (c *Call) signalLoop(ctx context.Context) {
	for {
		m, err := c.conn.Recv(ctx)
		if err != nil {
			c.end(fmt.Errorf("signalling: %w", err))
			return
		}
		if err := c.handle(ctx, m); err != nil {
			c.end(err)
			return
		}
		if m.Type == signal.TypeBye {
			c.end(nil)
			return
		}
	}
}

func (c *Call) handle(ctx context.Context, m signal.Message) error {
	switch m.Type {
	case signal.TypePeer:
		c.log.Info("other party joined", "their_role", m.Role, "offerer", m.Offerer)
		if m.Offerer {
			return c.offer(ctx)
		}
	case signal.TypeDescription:
		var d webrtc.SessionDescription
		if err := json.Unmarshal(m.Description, &d); err != nil {
			return fmt.Errorf("description from the other party: %w", err)
		}
		return c.remoteDescription(ctx, d)
	case signal.TypeCandidate:
		var cand webrtc.ICECandidateInit
		if err := json.Unmarshal(m.Candidate, &cand); err != nil {
			return fmt.Errorf("candidate from the other party: %w", err)
		}
		return c.addCandidate(cand)
	case signal.TypeError:
		return fmt.Errorf("signalling: %w", &ServerError{Message: m.Error})
	}
	return nil
}

// offer is made by the party that joined first. It opens the vitals
// DataChannel, so the channel is in the offer whichever side sends
// frames.
func (c *Call) offer(ctx context.Context) error {
	dc, err := c.pc.CreateDataChannel(vitalsLabel, nil)
	if err != nil {
		return fmt.Errorf("creating the %q data channel: %w", vitalsLabel, err)
	}
	c.vitalsChannel(dc)
	c.mu.Lock()
	c.offerStart = time.Now()
	c.mu.Unlock()
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("creating the offer: %w", err)
	}
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("setting the offer: %w", err)
	}
	return c.sendDescription(ctx, offer)
}

func (c *Call) remoteDescription(ctx context.Context, d webrtc.SessionDescription) error {
	if d.Type == webrtc.SDPTypeOffer {
		c.mu.Lock()
		c.offerStart = time.Now()
		c.mu.Unlock()
	}
	if err := c.pc.SetRemoteDescription(d); err != nil {
		return fmt.Errorf("setting the remote %s: %w", d.Type, err)
	}
	c.mu.Lock()
	c.remoteSet = true
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cand := range pending {
		if err := c.addCandidate(cand); err != nil {
			return err
		}
	}
	if d.Type != webrtc.SDPTypeOffer {
		return nil
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("creating the answer: %w", err)
	}
	if err := c.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("setting the answer: %w", err)
	}
	return c.sendDescription(ctx, answer)
}

func (c *Call) sendDescription(ctx context.Context, d webrtc.SessionDescription) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return c.send(ctx, signal.Message{Type: signal.TypeDescription, Description: b})
}

// addCandidate adds a remote candidate, or keeps it until the remote
// description is set (trickle may overtake it).
func (c *Call) addCandidate(cand webrtc.ICECandidateInit) error {
	c.mu.Lock()
	if !c.remoteSet {
		c.pending = append(c.pending, cand)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	if err := c.pc.AddICECandidate(cand); err != nil {
		// One unusable candidate (another address family, filtered out)
		// does not end the call.
		c.log.Debug("remote candidate not added", "err", err)
	}
	return nil
}
