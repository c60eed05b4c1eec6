// The patient's side of a telehealth call: camera and microphone, a
// WebRTC peer connection signalled over the WebSocket at /ws, and a
// DataChannel "vitals" carrying SpO2 frames from a (simulated) pulse
// oximeter. Parameters come from the invite link:
//   /?call=<id>&invite=<token>&role=patient&kind=video-visit&frames=<n>&interval=<ms>
// window.telehealth holds the page's state for tests and support staff;
// it never holds readings.
"use strict";

const params = new URLSearchParams(location.search);
const state = window.telehealth = { status: "starting", framesSent: 0, error: "", connection: "new" };

function setStatus(s) {
  state.status = s;
  document.getElementById("status").textContent = s;
}

function fail(err) {
  state.error = String(err && err.message || err);
  setStatus("error");
}

async function main() {
  const call = params.get("call"), invite = params.get("invite");
  const role = params.get("role") || "patient", kind = params.get("kind") || "video-visit";
  const maxFrames = Number(params.get("frames") || 0);
  const interval = Number(params.get("interval") || 20);
  if (!call || !invite) throw new Error("the link lacks call or invite");

  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240, frameRate: 15 }, audio: true });
  document.getElementById("local").srcObject = media;

  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  const send = (m) => ws.send(JSON.stringify(m));
  let pc = null;
  let remoteSet = false;
  const pending = [];

  function vitals(dc) {
    if (dc.label !== "vitals") return;
    dc.binaryType = "arraybuffer";
    dc.onopen = () => {
      setStatus("vitals");
      let seq = 0;
      const timer = setInterval(() => {
        if (dc.readyState !== "open" || (maxFrames > 0 && seq >= maxFrames)) { clearInterval(timer); return; }
        seq++;
        // A simulated reading: SpO2 percent and pulse per minute.
        const payload = new Uint8Array([95 + (seq % 4), 60 + (seq % 20)]);
        dc.send(vitalsFrame.encode({ type: vitalsFrame.TYPE_SPO2, priority: vitalsFrame.PRIORITY_HIGH,
          seq, deviceTimeNs: vitalsFrame.nowNs(), payload }));
        state.framesSent = seq;
        document.getElementById("frames").textContent = String(seq);
      }, interval);
    };
  }

  function newPeerConnection(iceServers) {
    pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    for (const track of media.getTracks()) pc.addTrack(track, media);
    pc.onicecandidate = (e) => { if (e.candidate) send({ type: "candidate", candidate: e.candidate.toJSON() }); };
    pc.onconnectionstatechange = () => {
      state.connection = pc.connectionState;
      if (pc.connectionState === "connected" && state.status !== "vitals") setStatus("connected");
      if (pc.connectionState === "failed") fail("the peer connection failed");
    };
    pc.ontrack = (e) => { document.getElementById("remote").srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.ondatachannel = (e) => vitals(e.channel);
  }

  async function onMessage(m) {
    switch (m.type) {
      case "joined":
        newPeerConnection(m.iceServers);
        setStatus("waiting");
        break;
      case "peer":
        setStatus("negotiating");
        if (m.offerer) {
          vitals(pc.createDataChannel("vitals"));
          await pc.setLocalDescription(await pc.createOffer());
          send({ type: "description", description: pc.localDescription.toJSON() });
        }
        break;
      case "description":
        await pc.setRemoteDescription(m.description);
        remoteSet = true;
        for (const c of pending.splice(0)) await pc.addIceCandidate(c).catch(() => {});
        if (m.description.type === "offer") {
          await pc.setLocalDescription(await pc.createAnswer());
          send({ type: "description", description: pc.localDescription.toJSON() });
        }
        break;
      case "candidate":
        if (!remoteSet) pending.push(m.candidate);
        else await pc.addIceCandidate(m.candidate).catch(() => {});
        break;
      case "bye":
        setStatus("ended");
        pc && pc.close();
        break;
      case "error":
        fail(m.error);
        break;
    }
  }

  // Messages are handled one at a time, in order: a candidate must not
  // overtake the description it belongs to.
  let queue = Promise.resolve();
  ws.onmessage = (e) => { queue = queue.then(() => onMessage(JSON.parse(e.data))).catch(fail); };
  ws.onopen = () => { setStatus("joining"); send({ type: "join", call, role, kind, invite }); };
  ws.onerror = () => fail("signalling connection error");
  ws.onclose = () => { if (state.status !== "ended" && state.status !== "error") fail("signalling connection closed"); };
}

main().catch(fail);
