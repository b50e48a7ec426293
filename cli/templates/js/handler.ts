/**
 * {{name}}: a Sluice event handler.
 *
 * On `greet.requested` `{"name": ...}` it counts the greetings of the
 * event's key in per-key state and emits `greeting.sent` to `greetings`.
 * A payload without `name` is fatal (dead-lettered): retrying cannot fix it.
 */
import { Fatal, handler } from '@sluice/sdk';

interface GreetRequested {
  name: string;
}

/** The handler: the host calls it once per event. */
export default handler((event, ctx) => {
  switch (event.type) {
    case 'greet.requested': {
      const request = event.json<Partial<GreetRequested> | null>();
      if (typeof request?.name !== 'string') {
        throw new Fatal(`event ${event.id} (${event.type}): the payload has no string field \`name\``);
      }
      const count = (ctx.state.getJson<number>('count') ?? 0) + 1;
      ctx.state.setJson('count', count);
      const message = count === 1 ? `Hello, ${request.name}!` : `Hello again, ${request.name}! (${count})`;
      ctx.emitJson('greetings', 'greeting.sent', { message, count }, { key: event.key });
      ctx.log.info(message);
      return;
    }
    default:
      ctx.log.debug(`ignoring ${event.type}`);
  }
});
