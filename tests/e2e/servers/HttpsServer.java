/*
 * A Java mTLS webhook endpoint (the JDK's com.sun.net.httpserver.HttpsServer) that trusts the client
 * certificates of a PKCS#12 or JKS truststore and picks up every change of that file without a restart.
 *
 *   javac -d classes HttpsServer.java
 *   java -cp classes HttpsServer --port 0 --keystore server.p12 --keystore-password-file kpw \
 *       --truststore /etc/webhook-trust/truststore.p12 --truststore-type PKCS12 \
 *       --truststore-password-file /etc/truststore-password/password
 *
 * SSLParameters.setNeedClientAuth(true): a client without a certificate, or with one the truststore
 * does not vouch for, is refused during the handshake. A watcher polls the truststore every 100 ms (the
 * target of its directory's ..data link, and the inode, size and mtime of the file it resolves to: the
 * kubelet's and trust-sync's swap never touch the file itself) and builds a whole new SSLContext; the
 * server's SSLContext hands every new connection an engine of the newest one. A new context also means
 * a new session cache and new ticket keys, so no session resumed from an older trust skips the check
 * (a resumed session is not verified again). An unusable truststore (unreadable, wrong password, no
 * trusted entry) keeps the previous trust and logs trust_reload_failed.
 *
 * A keep-alive connection whose certificate the current truststore no longer trusts is answered 421 and
 * closed: a revoked client cannot go on over a connection opened before the change.
 *
 * The client certificate's validity period is checked before the JDK's trust manager runs: the JDK
 * accepts a client certificate that is itself a trusted entry without looking at its dates, so an
 * expired certificate still listed would get in. --check-validity false leaves that check out (to show
 * what the JDK alone does).
 *
 * One JSON line per event on stdout: listening, trust_loaded, trust_reload_failed, delivery.
 * Only the JDK (11 or later).
 */

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsExchange;
import com.sun.net.httpserver.HttpsParameters;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.KeyManagementException;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executors;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLContextSpi;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocketFactory;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSessionContext;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedTrustManager;
import javax.net.ssl.X509TrustManager;

public final class HttpsServer {

    /** One version of the truststore: the context new connections get and the trust manager it uses. */
    static final class Generation {
        final int number;
        final SSLContext context;
        final X509TrustManager trust;
        final List<String> fingerprints;

        Generation(int number, SSLContext context, X509TrustManager trust, List<String> fingerprints) {
            this.number = number;
            this.context = context;
            this.trust = trust;
            this.fingerprints = fingerprints;
        }
    }

    /** An SSLContext whose engines all come from the newest generation's context. */
    static final class Switching extends SSLContextSpi {
        volatile Generation current;

        @Override
        protected void engineInit(KeyManager[] km, TrustManager[] tm, SecureRandom random)
                throws KeyManagementException {
            throw new KeyManagementException("initialised by the reloader");
        }

        @Override
        protected SSLEngine engineCreateSSLEngine() {
            return current.context.createSSLEngine();
        }

        @Override
        protected SSLEngine engineCreateSSLEngine(String host, int port) {
            return current.context.createSSLEngine(host, port);
        }

        @Override
        protected SSLSocketFactory engineGetSocketFactory() {
            return current.context.getSocketFactory();
        }

        @Override
        protected SSLServerSocketFactory engineGetServerSocketFactory() {
            return current.context.getServerSocketFactory();
        }

        @Override
        protected SSLSessionContext engineGetServerSessionContext() {
            return current.context.getServerSessionContext();
        }

        @Override
        protected SSLSessionContext engineGetClientSessionContext() {
            return current.context.getClientSessionContext();
        }

        @Override
        protected SSLParameters engineGetDefaultSSLParameters() {
            return current.context.getDefaultSSLParameters();
        }

        @Override
        protected SSLParameters engineGetSupportedSSLParameters() {
            return current.context.getSupportedSSLParameters();
        }
    }

    static final class SwitchingContext extends SSLContext {
        SwitchingContext(Switching spi, Generation first) {
            super(spi, first.context.getProvider(), first.context.getProtocol());
        }
    }

    /**
     * The JDK's trust manager, and the validity period of the client's own certificate checked first.
     *
     * <p>The JDK's PKIX validator returns at once when the client's certificate is itself a trusted
     * entry (the operator lists the client certificates themselves), without looking at its dates: a
     * listed certificate that has expired would be accepted. With --check-validity false this server
     * shows exactly that.
     */
    static final class Dated extends X509ExtendedTrustManager {
        private final X509ExtendedTrustManager jdk;

        Dated(X509ExtendedTrustManager jdk) {
            this.jdk = jdk;
        }

        private static void dates(X509Certificate[] chain) throws CertificateException {
            if (chain != null && chain.length > 0) {
                chain[0].checkValidity();
            }
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket)
                throws CertificateException {
            dates(chain);
            jdk.checkClientTrusted(chain, authType, socket);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine)
                throws CertificateException {
            dates(chain);
            jdk.checkClientTrusted(chain, authType, engine);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            dates(chain);
            jdk.checkClientTrusted(chain, authType);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket)
                throws CertificateException {
            jdk.checkServerTrusted(chain, authType, socket);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine)
                throws CertificateException {
            jdk.checkServerTrusted(chain, authType, engine);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            jdk.checkServerTrusted(chain, authType);
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return jdk.getAcceptedIssuers();
        }
    }

    private final Map<String, String> options;
    private final Path truststore;
    private final String truststoreType;
    private final char[] truststorePassword;
    private final KeyManager[] keyManagers;
    private final boolean checkValidity;
    private final Switching switching = new Switching();

    HttpsServer(Map<String, String> options) throws Exception {
        this.options = options;
        this.truststore = Paths.get(required("truststore"));
        this.truststoreType = options.getOrDefault("truststore-type", "PKCS12");
        this.truststorePassword = readPassword(options.get("truststore-password-file"));
        this.checkValidity = Boolean.parseBoolean(options.getOrDefault("check-validity", "true"));
        KeyStore keystore = KeyStore.getInstance(options.getOrDefault("keystore-type", "PKCS12"));
        char[] keyPassword = readPassword(options.get("keystore-password-file"));
        try (InputStream in = Files.newInputStream(Paths.get(required("keystore")))) {
            keystore.load(in, keyPassword);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keystore, keyPassword);
        this.keyManagers = kmf.getKeyManagers();
    }

    private String required(String name) {
        String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    /** The file's content without one trailing newline; null (no password) without a file. */
    static char[] readPassword(String file) throws IOException {
        if (file == null) {
            return null;
        }
        String text = new String(Files.readAllBytes(Paths.get(file)), StandardCharsets.UTF_8);
        if (text.endsWith("\n")) {
            text = text.substring(0, text.length() - 1);
        }
        if (text.endsWith("\r")) {
            text = text.substring(0, text.length() - 1);
        }
        return text.toCharArray();
    }

    static String fingerprint(Certificate cert) throws Exception {
        byte[] digest = MessageDigest.getInstance("SHA-256").digest(cert.getEncoded());
        StringBuilder hex = new StringBuilder();
        for (byte b : digest) {
            hex.append(String.format("%02x", b));
        }
        return hex.toString();
    }

    static synchronized void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }

    static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    /** The identity of the truststore version: the ..data link's target, the resolved file's inode, size, mtime. */
    String identity() {
        String link = "";
        Path data = truststore.toAbsolutePath().getParent().resolve("..data");
        try {
            link = Files.readSymbolicLink(data).toString();
        } catch (IOException | UnsupportedOperationException e) {
            // a plain directory: the file's own attributes tell
        }
        try {
            BasicFileAttributes attrs = Files.readAttributes(truststore, BasicFileAttributes.class);
            return link + "|" + attrs.fileKey() + "|" + attrs.size() + "|" + attrs.lastModifiedTime().toMillis();
        } catch (IOException e) {
            return link + "|missing";
        }
    }

    Generation build(int number) throws Exception {
        KeyStore store = KeyStore.getInstance(truststoreType);
        try (InputStream in = Files.newInputStream(truststore)) {
            store.load(in, truststorePassword);
        }
        List<String> fingerprints = new ArrayList<>();
        for (String alias : Collections.list(store.aliases())) {
            if (store.isCertificateEntry(alias)) {
                fingerprints.add(fingerprint(store.getCertificate(alias)));
            }
        }
        if (fingerprints.isEmpty()) {
            // What the JDK makes of a PKCS#12 without its trusted-key-usage attribute: trust nobody.
            throw new IllegalStateException("the truststore holds no trusted certificate entry");
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        X509TrustManager trust = null;
        for (TrustManager tm : tmf.getTrustManagers()) {
            if (tm instanceof X509ExtendedTrustManager) {
                trust = checkValidity ? new Dated((X509ExtendedTrustManager) tm) : (X509TrustManager) tm;
            }
        }
        if (trust == null) {
            throw new IllegalStateException("the JDK offers no X509ExtendedTrustManager");
        }
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(keyManagers, new TrustManager[] {trust}, null);
        return new Generation(number, context, trust, fingerprints);
    }

    boolean reload(int number) {
        try {
            Generation next = build(number);
            switching.current = next;
            StringBuilder listed = new StringBuilder("[");
            for (String fp : next.fingerprints) {
                listed.append(listed.length() > 1 ? "," : "").append(quote(fp));
            }
            emit("{\"event\": \"trust_loaded\", \"generation\": " + number + ", \"fingerprints\": " + listed + "]}");
            return true;
        } catch (Exception e) {
            emit("{\"event\": \"trust_reload_failed\", \"error\": " + quote(e.toString())
                    + ", \"action\": \"keeping the previous trust\"}");
            return false;
        }
    }

    void watch() {
        String seen = identity();
        int number = 1;
        while (true) {
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                return;
            }
            String now = identity();
            if (!now.equals(seen)) {
                seen = now;
                number++;
                reload(number);
            }
        }
    }

    /** Whether the current truststore still trusts the connection's client certificate chain. */
    boolean stillTrusted(Generation gen, SSLSession session) {
        try {
            Certificate[] peer = session.getPeerCertificates();
            X509Certificate[] chain = new X509Certificate[peer.length];
            for (int i = 0; i < peer.length; i++) {
                chain[i] = (X509Certificate) peer[i];
            }
            gen.trust.checkClientTrusted(chain, "RSA");
            return true;
        } catch (Exception e) {
            return false;
        }
    }

    void handle(HttpExchange exchange) throws IOException {
        Generation gen = switching.current;
        String peer = "";
        int status = 200;
        try {
            SSLSession session = ((HttpsExchange) exchange).getSSLSession();
            Certificate[] certs = session.getPeerCertificates();
            peer = fingerprint(certs[0]);
            if (!stillTrusted(gen, session)) {
                status = 421;
            }
        } catch (Exception e) {
            status = 421;
        }
        byte[] body;
        try (InputStream in = exchange.getRequestBody()) {
            body = in.readNBytes((1 << 20) + 1);
        }
        if (status == 200) {
            if (!"POST".equals(exchange.getRequestMethod())) {
                status = 405;
            } else if (body.length == 0 || body.length > 1 << 20) {
                status = 400;
            }
        }
        byte[] answer = ("{\"status\": " + status + "}\n").getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        if (status == 421) {
            exchange.getResponseHeaders().set("Connection", "close");
        }
        exchange.sendResponseHeaders(status, answer.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(answer);
        }
        emit("{\"event\": \"delivery\", \"status\": " + status + ", \"method\": " + quote(exchange.getRequestMethod())
                + ", \"path\": " + quote(exchange.getRequestURI().getPath()) + ", \"client_fingerprint\": "
                + quote(peer) + ", \"trust_generation\": " + gen.number + "}");
        if (status == 421) {
            exchange.close();
        }
    }

    void serve() throws Exception {
        if (!reload(1)) {
            System.exit(1);
        }
        SSLContext context = new SwitchingContext(switching, switching.current);
        InetSocketAddress address = new InetSocketAddress(
                InetAddress.getByName(options.getOrDefault("host", "127.0.0.1")),
                Integer.parseInt(options.getOrDefault("port", "0")));
        com.sun.net.httpserver.HttpsServer server = com.sun.net.httpserver.HttpsServer.create(address, 128);
        server.setHttpsConfigurator(new HttpsConfigurator(context) {
            @Override
            public void configure(HttpsParameters params) {
                SSLParameters ssl = getSSLContext().getDefaultSSLParameters();
                ssl.setNeedClientAuth(true);
                ssl.setProtocols(new String[] {"TLSv1.3", "TLSv1.2"});
                params.setSSLParameters(ssl);
            }
        });
        server.createContext("/", this::handle);
        server.setExecutor(Executors.newCachedThreadPool());
        server.start();
        Thread watcher = new Thread(this::watch, "truststore-watcher");
        watcher.setDaemon(true);
        watcher.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(0)));
        emit("{\"event\": \"listening\", \"address\": " + quote("127.0.0.1:" + server.getAddress().getPort()) + "}");
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> options = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --option value, got " + args[i]);
            }
            options.put(args[i].substring(2), args[i + 1]);
        }
        new HttpsServer(options).serve();
    }
}
