package peer

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// videoFrameInterval is the synthetic camera's frame rate (15 fps, what
// a telehealth call on a poor link settles at).
const videoFrameInterval = time.Second / 15

// addMedia sets up the transceivers before any description, so that
// JSEP pairs them with the other party's m-lines whichever side offers:
// a sender's track, a receiver's recvonly video and audio.
func (c *Call) addMedia(ctx context.Context) error {
	if !c.o.SendVideo {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if _, err := c.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return fmt.Errorf("peer: adding a recvonly %s transceiver: %w", kind, err)
			}
		}
		return nil
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "patient")
	if err != nil {
		return err
	}
	sender, err := c.pc.AddTrack(track)
	if err != nil {
		return fmt.Errorf("peer: adding the video track: %w", err)
	}
	// RTCP must be read for the interceptors (NACK, reports) to work.
	go func() {
		for {
			if _, _, err := sender.ReadRTCP(); err != nil {
				return
			}
		}
	}()
	go c.sendVideo(ctx, track)
	return nil
}

// sendVideo writes synthetic VP8 samples once the call is connected:
// random bytes in VP8's RTP packetization, enough to exercise SRTP and
// the receiver without an encoder.
func (c *Call) sendVideo(ctx context.Context, track *webrtc.TrackLocalStaticSample) {
	select {
	case <-c.connected:
	case <-c.ended:
		return
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(videoFrameInterval)
	defer t.Stop()
	frame := make([]byte, 1800) // two RTP packets per frame
	for {
		select {
		case <-c.ended:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, _ = rand.Read(frame)
		if err := track.WriteSample(media.Sample{Data: frame, Duration: videoFrameInterval}); err != nil {
			return
		}
	}
}

// receiveTrack counts the RTP packets of a remote track by payload type,
// and notes the payload type negotiated for video.
func (c *Call) receiveTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	codec := tr.Codec()
	c.mu.Lock()
	if tr.Kind() == webrtc.RTPCodecTypeVideo {
		c.stats.VideoPayloadType = uint8(codec.PayloadType)
		c.stats.VideoMimeType = codec.MimeType
	}
	c.mu.Unlock()
	c.log.Info("receiving", "kind", tr.Kind().String(), "codec", codec.MimeType)
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.stats.RTPPayloadTypes[pkt.PayloadType]++
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			c.stats.VideoPackets++
		}
		c.mu.Unlock()
	}
}
