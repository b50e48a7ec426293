// @ts-check
/**
 * # greeter-js: welcome new customers
 *
 * A stateless handler in plain JavaScript. For every `customer.registered`
 * `{customer_id, name, email, locale?}` it emits `email.requested` to the
 * `notifications` topic, keyed by the customer id, with a greeting in the
 * customer's language (`en` when the locale is absent or unknown). It keeps
 * no state, so it accepts keyless events too.
 *
 * A payload without a usable `customer_id`, `name` or `email` is fatal
 * (dead-lettered); other event types are ignored.
 */
import { Fatal, handler } from '@sluice/sdk';

export const TOPIC = 'notifications';

/** Greeting and subject line per language. */
const GREETINGS = {
  en: { hello: (/** @type {string} */ n) => `Hello ${n}, welcome aboard!`, subject: 'Welcome' },
  fr: { hello: (/** @type {string} */ n) => `Bonjour ${n}, bienvenue !`, subject: 'Bienvenue' },
  nl: { hello: (/** @type {string} */ n) => `Hallo ${n}, welkom!`, subject: 'Welkom' },
};

/** @param {unknown} locale @returns {keyof typeof GREETINGS} */
function language(locale) {
  const lang = typeof locale === 'string' ? locale.toLowerCase().split(/[-_]/)[0] : '';
  return lang in GREETINGS ? /** @type {keyof typeof GREETINGS} */ (lang) : 'en';
}

/** @param {Record<string, unknown>} data @param {string} field */
function requiredString(data, field) {
  const value = data[field];
  if (typeof value !== 'string' || value.trim() === '') {
    throw new Fatal(`customer.registered: field \`${field}\` must be a non-empty string`);
  }
  return value.trim();
}

export default handler((event, ctx) => {
  if (event.type !== 'customer.registered') {
    ctx.log.debug(`ignoring ${event.type}`);
    return;
  }
  const data = event.json();
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new Fatal('customer.registered: the payload must be a JSON object');
  }
  const customerId = requiredString(data, 'customer_id');
  const name = requiredString(data, 'name');
  const email = requiredString(data, 'email');
  if (!email.includes('@')) throw new Fatal(`customer.registered: ${JSON.stringify(email)} is not an email address`);
  const lang = language(data.locale);
  const greeting = GREETINGS[lang];
  const id = ctx.emitJson(
    TOPIC,
    'email.requested',
    { to: email, subject: greeting.subject, body: greeting.hello(name), language: lang, customer_id: customerId },
    { key: customerId },
  );
  ctx.log.info(`welcome email (${lang}) requested for ${customerId}: ${id}`);
});
