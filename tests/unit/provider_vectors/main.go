// Command providervectors writes signed webhook deliveries in the provider's v6 and v15 schemes as
// JSON, for the receiver's tests. It is deliberately independent of the Python code under test: the
// digest, the signature base and the signature are all made here, with the standard library only
// (crypto/ecdsa SignASN1 over SHA-512, as the provider's signing proxy does, and crypto/ed25519).
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

type vector struct {
	Name      string      `json:"name"`
	Scheme    string      `json:"scheme"`
	KeyID     string      `json:"keyid"`
	PublicKey string      `json:"public_key"`
	Method    string      `json:"method"`
	Target    string      `json:"target"`
	Headers   [][2]string `json:"headers"`
	Body      string      `json:"body"`
	Base      string      `json:"base"`
	Created   int64       `json:"created"`
}

const (
	created = 1633529659 // the provider's documented example
	nonce   = "o085M4cMgpbicuOL"
	body    = `{"hello": "world"}`
)

func build(scheme, keyID string, signer crypto.Signer, sign func([]byte) []byte) vector {
	var digestName, digest string
	quote := func(s string) string { return s }
	if scheme == "provider-v6" {
		sum := sha256.Sum256([]byte(body))
		digestName, digest = "digest", "SHA-256="+base64.StdEncoding.EncodeToString(sum[:])
	} else {
		sum := sha512.Sum512([]byte(body))
		digestName, digest = "content-digest", "sha-512=:"+base64.StdEncoding.EncodeToString(sum[:])+":"
		quote = func(s string) string { return `"` + s + `"` }
	}
	headers := [][2]string{
		{"Content-Type", "application/json"},
		{"Content-Length", fmt.Sprint(len(body))},
		{strings.Title(digestName), digest},
		{"Idempotency-Key", "2133825797664cad"},
		{"Upvest-Client-Id", "5ec16164-6173-461d-b90d-116d68f55b40"},
	}
	components := [][2]string{
		{"@method", "POST"}, {"@path", "/webhooks"}, {"@query", "?delivery=1"},
		{"content-length", fmt.Sprint(len(body))}, {"content-type", "application/json"},
		{digestName, digest}, {"idempotency-key", "2133825797664cad"},
		{"upvest-client-id", "5ec16164-6173-461d-b90d-116d68f55b40"},
	}
	var names, lines []string
	for _, c := range components {
		names = append(names, `"`+c[0]+`"`)
		lines = append(lines, quote(c[0])+": "+c[1])
	}
	params := fmt.Sprintf("(%s);keyid=%q;created=%d;expires=%d;nonce=%q",
		strings.Join(names, " "), keyID, created, created+5, nonce)
	lines = append(lines, quote("@signature-params")+": "+params)
	base := strings.Join(lines, "\n")
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		panic(err)
	}
	headers = append(headers,
		[2]string{"Signature-Input", "sig1=" + params},
		[2]string{"Signature", "sig1=:" + base64.StdEncoding.EncodeToString(sign([]byte(base))) + ":"})
	return vector{
		Name: scheme + "/" + keyID, Scheme: scheme, KeyID: keyID,
		PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		Method:    "POST", Target: "/webhooks?delivery=1", Headers: headers, Body: body, Base: base,
		Created: created,
	}
}

func main() {
	var out []vector
	for _, scheme := range []string{"provider-v6", "provider-v15"} {
		for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
			key, err := ecdsa.GenerateKey(curve, rand.Reader)
			if err != nil {
				panic(err)
			}
			keyID := "ecdsa-" + strings.ToLower(strings.ReplaceAll(curve.Params().Name, "-", ""))
			out = append(out, build(scheme, keyID, key, func(base []byte) []byte {
				hash := sha512.Sum512(base)
				sig, err := ecdsa.SignASN1(rand.Reader, key, hash[:])
				if err != nil {
					panic(err)
				}
				return sig
			}))
		}
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		out = append(out, build(scheme, "ed25519", key, func(base []byte) []byte {
			return ed25519.Sign(key, base)
		}))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
