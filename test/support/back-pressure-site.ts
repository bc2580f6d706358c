/** The site of the back-pressure tests over TCP (test/back-pressure.test.ts) and WebSocket (test/websocket.test.ts). */
export const BACK_PRESSURE_SITE_DOC = {
  guests: true,
  events: [
    { name: 'feed', category: 'queueing', lifetime: '1d', maxQueueSize: 100_000, access: 'everyone' },
    { name: 'live', category: 'queueing', lifetime: '1d', maxQueueSize: 1000, access: 'everyone' }
  ],
  services: [{ id: 'svc', secret: 'svc-secret-1', events: ['feed', 'live'] }],
  users: [{ name: 'u', password: 'u-password' }]
}
/** Events in the queue the never-reading clients subscribe to, and their payload size. */
export const QUEUE_EVENTS = 5000
export const PAYLOAD_BYTES = 1024
