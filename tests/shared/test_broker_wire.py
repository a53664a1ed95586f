"""The wire contract over a real Mosquitto broker: bytes and topics arrive unchanged."""

import queue

import paho.mqtt.client as mqtt

from nightlink.shared import codec, features, topics
from tests.shared import golden


def _client(broker, on_message=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    if on_message:
        c.on_message = on_message
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    return c


def test_broker__batch_round_trip_on_validated_topic(mosquitto):
    got = queue.Queue()
    sub = _client(mosquitto, lambda _c, _u, msg: got.put((msg.topic, msg.payload)))
    sub.subscribe(topics.INGEST_FILTER, qos=1)
    pub = _client(mosquitto)
    try:
        recs = [r for _, r in golden.valid_records() if r.stream == features.CGM]
        topic = topics.data_topic("fam-1", codec.device_name(recs[0].device), "cgm")
        payload = codec.encode_batch(recs)
        # Publish until the subscription is live (SUBACK races the first publish).
        for _ in range(50):
            pub.publish(topics.check_publish_topic(topic), payload, qos=1).wait_for_publish(5)
            try:
                t, p = got.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("nothing arrived through the broker")
        assert t == topic and p == payload
        kind, tenant, device, stream = topics.parse(t)
        assert (kind, tenant, stream) == ("data", "fam-1", "cgm")
        decoded, errors = codec.decode_batch(p)
        assert errors == [] and decoded == recs
        assert all(codec.device_name(r.device) == device for r in decoded)
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()
