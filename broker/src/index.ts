export { createBroker, BROKER_DEFAULTS, type Broker, type BrokerOptions, type BrokerStats, type ConnectionRefusal, type AdminCheck, type ConnectedEndpoints } from './broker.js'
export { Dashboard, DASHBOARD_DEFAULTS, DASHBOARD_PATH, LOGIN_REFUSED, type DashboardOptions } from './dashboard/dashboard.js'
export { AdminSessions, ADMIN_SESSIONS_DEFAULTS } from './dashboard/admin-sessions.js'
export { GatewayScraper, GATEWAY_SCRAPER_DEFAULTS, gatewayFigures, parsePrometheusText, type GatewayView } from './dashboard/gateway-scraper.js'
export { EventTail, EVENT_TAIL_DEFAULTS, type TailEntry, type TailFilter } from './dashboard/event-tail.js'
export { LOGIN_THROTTLE_DEFAULTS, type LoginStats } from './auth/login-throttle.js'
export { listenTcp, type TcpListener } from './listeners/tcp-listener.js'
export { listenTls, TLS_LISTENER_DEFAULTS, type TlsListener, type TlsListenerOptions, type TlsCertificates } from './listeners/tls-listener.js'
export {
  listenWebSocket, WEBSOCKET_LISTENER_DEFAULTS, WEBSOCKET_PATH, WEBSOCKET_SUBPROTOCOL,
  type HttpHandler, type WebSocketListener, type WebSocketListenerOptions, type WebSocketRefusals
} from './listeners/websocket-listener.js'
export { startBrokerServer, checkListenerSecurity, isLoopbackHost, type BrokerServer, type BrokerServerOptions, type BrokerTlsFiles, type BrokerWebSocketOptions, type BrokerMetricsOptions, type BrokerDashboardOptions } from './server.js'
export { brokerMetricsRegistry, COMMIT_SECONDS_BUCKETS } from './metrics.js'
export type { EventStore, AppendBatch, AppendResult, ArrivingEvent, EventCounters, CommitObserver, ReadQuery, QueueLimits, LimitsOf } from './event-store/event-store.js'
export { DropReport, type DropDelta } from './drop-report.js'
export { createSqliteEventStore, SqliteEventStore } from './event-store/sqlite-event-store.js'
export { MemoryEventStore } from './event-store/memory-event-store.js'
export { diffSites, describeSiteChange, type SiteChange, type SiteChangeProblem, type SiteChangeReport } from './site/site-change.js'
