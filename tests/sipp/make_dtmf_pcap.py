#!/usr/bin/env python3
"""Writes tests/sipp/dtmf_keys.pcap: what a phone sends while its user presses
1, 1 again, then # during the warning (RFC 4733 telephone-event, payload type
101, between 20 ms PCMU packets of silence), for SIPp's play_pcap_audio.

    python3 tests/sipp/make_dtmf_pcap.py [OUTPUT]   # default: tests/sipp/dtmf_keys.pcap

The output depends on nothing but this file (fixed addresses, ports, SSRC,
sequence numbers, timestamps and capture times), so it is the same byte for
byte on every run; tests/sipp/run.sh regenerates it and compares before use.
Each key is sent the way RFC 4733 says: its packets share one RTP timestamp,
the first has the marker bit, the duration grows by 160 per packet, and the
end packet (E bit) is sent three times. The same key twice is two events with
two timestamps. courtline must record "11#".
"""
import struct
import sys

PT_PCMU, PT_EVENT = 0, 101
SSRC = 0x1234ABCD
FIRST_SEQ, FIRST_TS = 1000, 16000
CAPTURE_START_S = 1_700_000_000
SRC = DST = bytes([127, 0, 0, 1])
PORT = 6000
SILENCE = b"\xff" * 160
# (key event code, first 20 ms slot): '1' at 0.4 s, '1' at 1.0 s, '#' at 1.6 s.
KEYS = [(1, 20), (1, 50), (11, 80)]
SLOTS = 110
# Per key: three updates, then the final duration three times with the E bit.
KEY_STEPS = [(160, False), (320, False), (480, False), (640, True), (640, True), (640, True)]


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(rtp: bytes) -> bytes:
    udp_len = 8 + len(rtp)
    pseudo = SRC + DST + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", PORT, PORT, udp_len, 0) + rtp
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0, SRC, DST)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    ethernet = b"\0" * 12 + struct.pack("!H", 0x0800)
    return ethernet + ip + udp


def rtp(pt: int, marker: bool, seq: int, ts: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts, SSRC) + payload


def packets():
    """(slot, RTP packet) in sending order."""
    key_at = {start + step: (event, start, step) for event, start in KEYS for step in range(len(KEY_STEPS))}
    seq = FIRST_SEQ
    for slot in range(SLOTS):
        if slot in key_at:
            event, start, step = key_at[slot]
            duration, end = KEY_STEPS[step]
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            packet = rtp(PT_EVENT, step == 0, seq, FIRST_TS + 160 * start, payload)
        else:
            packet = rtp(PT_PCMU, slot == 0, seq, FIRST_TS + 160 * slot, SILENCE)
        yield slot, packet
        seq += 1


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/sipp/dtmf_keys.pcap"
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for slot, packet in packets():
            data = frame(packet)
            usec = slot * 20_000
            f.write(struct.pack("<IIII", CAPTURE_START_S + usec // 1_000_000, usec % 1_000_000, len(data), len(data)))
            f.write(data)


if __name__ == "__main__":
    main()
