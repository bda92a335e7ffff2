package app

import (
	"encoding/binary"
	"strings"
)

// The layout of the replicated state. Names of services, instances and checks
// never contain '/', so '/' separates the parts of a key.
//
//	m/info                          Meta (height, block time)
//	n/<pubkey>                      last committed nonce of a signer (8 bytes BE)
//	o/<observer id>                 types.Observer
//	p/<operator pubkey hex>         types.Operator
//	s/<service>/<instance>          types.ServiceInstance
//	c/<service>/<instance>/<check>  types.CheckState
//	r/<service>/<instance>/<check>/<observer id>  types.ObservationRecord
//	a/<height BE8><seq BE4>         types.Alert
//	t/<observer id>                 types.ObserverStanding
//	i/<service>                     height its agreed state last changed (8 bytes BE)
//	x/<alert id>                    where the alert is: its a/ key's height and seq (12 bytes)
//	d/<alert id>/<receiver>/<observer id>  types.Delivery (a committed receipt)
//	w/<receiver>                    types.Receiver (a webhook receiver's acknowledgement key)
//	v/<kv key>                      types.KVEntry (a key/value entry; kv keys may hold '/')
//	l/<kv key>                      lock-delay mark: block time (ms, 8 bytes BE) until which the key cannot be locked
//	e/<session id>                  types.Session
//	h/<session id>/<kv key>         a lock the session holds (value 1 byte)
//	j/<service>/<instance>/<session id>  a session of the instance (value 1 byte)
//	q/<expires ms BE8><session id>  a session's TTL deadline (value 1 byte)
//	m/quotas                        genesis quotas of every operator: kv_bytes, kv_keys, instances (8 bytes BE each)
//	m/quiet                         genesis quiet_ms (8 bytes BE), when above 0
//	u/<operator pubkey hex>         types.Usage (what the operator keeps; absent: nothing)
//	g/<observer id>                 types.ObserverStamp (the observer's vouches; absent: none)
var (
	keyInfo        = []byte("m/info")
	prefixNonce    = []byte("n/")
	prefixObs      = []byte("o/")
	prefixOp       = []byte("p/")
	prefixService  = []byte("s/")
	prefixCheck    = []byte("c/")
	prefixRecord   = []byte("r/")
	prefixAlert    = []byte("a/")
	prefixStand    = []byte("t/")
	prefixIndex    = []byte("i/")
	prefixAlertID  = []byte("x/")
	prefixDelivery = []byte("d/")
	prefixReceiver = []byte("w/")
	prefixKV       = []byte("v/")
	prefixDelay    = []byte("l/")
	prefixSession  = []byte("e/")
	prefixHeld     = []byte("h/")
	prefixInstSess = []byte("j/")
	prefixTTL      = []byte("q/")
	keyQuotas      = []byte("m/quotas")
	keyQuiet       = []byte("m/quiet") // genesis quiet_ms, 8 bytes BE; absent: 0
	prefixUsage    = []byte("u/")
	prefixStamp    = []byte("g/")
	// y/<observer id>/<nonce BE8>: evidence of an observer's equivocation.
	prefixEquivocation = []byte("y/")
)

func kvKey(key string) []byte        { return append(append([]byte{}, prefixKV...), key...) }
func delayKey(key string) []byte     { return append(append([]byte{}, prefixDelay...), key...) }
func sessionKey(id string) []byte    { return cat(prefixSession, id) }
func heldKey(sid, key string) []byte { return cat(prefixHeld, sid, key) }
func heldPrefix(sid string) []byte   { return cat(prefixHeld, sid, "") }
func instSessPrefix(service, instance string) []byte {
	return cat(prefixInstSess, service, instance, "")
}
func instSessKey(service, instance, sid string) []byte {
	return cat(prefixInstSess, service, instance, sid)
}

func ttlKey(expiresMs int64, sid string) []byte {
	k := append([]byte{}, prefixTTL...)
	k = binary.BigEndian.AppendUint64(k, uint64(expiresMs))
	return append(k, sid...)
}

func cat(prefix []byte, parts ...string) []byte {
	return append(append([]byte{}, prefix...), strings.Join(parts, "/")...)
}

func nonceKey(pub []byte) []byte            { return append(append([]byte{}, prefixNonce...), pub...) }
func observerKey(id string) []byte          { return cat(prefixObs, id) }
func operatorKey(hexPub string) []byte      { return cat(prefixOp, hexPub) }
func instanceKey(service, id string) []byte { return cat(prefixService, service, id) }
func servicePrefix(service string) []byte   { return cat(prefixService, service, "") }
func checkKey(ck string) []byte             { return cat(prefixCheck, ck) }
func recordKey(ck, observer string) []byte  { return cat(prefixRecord, ck, observer) }
func recordPrefix(ck string) []byte         { return cat(prefixRecord, ck, "") }
func standingKey(observer string) []byte    { return cat(prefixStand, observer) }
func stampKey(observer string) []byte       { return cat(prefixStamp, observer) }
func usageKey(hexPub string) []byte         { return cat(prefixUsage, hexPub) }
func serviceIndexKey(service string) []byte { return cat(prefixIndex, service) }

// CheckRef is the "service/instance/check" name of a check.
func CheckRef(service, instance, check string) string {
	return service + "/" + instance + "/" + check
}

func alertKey(height int64, seq uint32) []byte {
	k := append([]byte{}, prefixAlert...)
	k = binary.BigEndian.AppendUint64(k, uint64(height))
	return binary.BigEndian.AppendUint32(k, seq)
}

func alertIDKey(id string) []byte { return cat(prefixAlertID, id) }

func deliveryKey(alertID, receiver, observer string) []byte {
	return cat(prefixDelivery, alertID, receiver, observer)
}

// deliveryPrefix is where the receipts of one alert to one receiver are.
func deliveryPrefix(alertID, receiver string) []byte {
	return cat(prefixDelivery, alertID, receiver, "")
}

func receiverKey(name string) []byte { return cat(prefixReceiver, name) }
