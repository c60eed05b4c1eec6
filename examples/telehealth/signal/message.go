// Package signal is the telehealth signalling service: it pairs the two
// parties of a call and relays their SDP descriptions and ICE candidates,
// and hands each party the TURN relay of its own site. It has two front
// doors speaking the same JSON messages: a bidirectional gRPC stream for
// services in the mesh (served proxyless, mTLS and intentions by medmesh)
// and a WebSocket for browsers (with the page that places a call).
//
// Descriptions and candidates are relayed as opaque JSON: the service
// never parses, stores or logs them. It logs who joined which kind of
// call, never the call's content.
package signal

import "encoding/json"

// Message types. A party sends TypeJoin first; everything after is
// relayed to the other party of the call, except what the server itself
// sends (TypeJoined, TypePeer, TypeBye, TypeError).
const (
	TypeJoin        = "join"        // party -> server: Call, Role, Kind, Invite (browsers)
	TypeJoined      = "joined"      // server -> party: ICEServers, Invite (mesh parties)
	TypePeer        = "peer"        // server -> party: the other party is here; Role is theirs, Offerer says who offers
	TypeDescription = "description" // relayed: Description (an RTCSessionDescriptionInit)
	TypeCandidate   = "candidate"   // relayed: Candidate (an RTCIceCandidateInit)
	TypeBye         = "bye"         // server -> party: the other party left
	TypeError       = "error"       // server -> party: Error; the server then ends the session
)

// Roles of the two parties of a call.
const (
	RoleClinician = "clinician"
	RolePatient   = "patient"
)

// Message is one signalling message, on both doors (gRPC with the JSON
// codec, and WebSocket text frames).
type Message struct {
	Type string `json:"type"`
	// Call is the call ID (join). It is chosen by the party that sets
	// up the call and should be random: it is not a patient reference.
	Call string `json:"call,omitempty"`
	// Role is the sender's role in a join, the other party's in a peer
	// message.
	Role string `json:"role,omitempty"`
	// Kind is the kind of call (join), e.g. "video-visit"; it is what the
	// audit log records, with the caller.
	Kind string `json:"kind,omitempty"`
	// Invite admits a browser to a call a mesh party opened (join), and
	// is handed to the mesh party that opened it (joined).
	Invite string `json:"invite,omitempty"`
	// Offerer is true in the peer message to the party that makes the
	// offer: the one that joined first, which has been waiting with its
	// media ready.
	Offerer bool `json:"offerer,omitempty"`
	// ICEServers are the STUN/TURN servers of the party's site (joined).
	ICEServers []ICEServer `json:"iceServers,omitempty"`
	// Description and Candidate are relayed as they are.
	Description json.RawMessage `json:"description,omitempty"`
	Candidate   json.RawMessage `json:"candidate,omitempty"`
	Error       string          `json:"error,omitempty"`
}

// ICEServer is an RTCIceServer: browsers take it as it is, and it has the
// JSON of pion's webrtc.ICEServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}
