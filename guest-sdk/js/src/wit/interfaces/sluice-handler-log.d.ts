declare module 'sluice:handler/log@0.1.0' {
  /**
   * Records `message` at `level`. Messages beyond the handler's log limit
   * are dropped and counted.
   */
  export function log(level: Level, message: string): void;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * Very detailed diagnostics.
   * ## `"debug"`
   * 
   * Diagnostics for developers.
   * ## `"info"`
   * 
   * Normal operation.
   * ## `"warn"`
   * 
   * Something unexpected that the handler recovered from.
   * ## `"error"`
   * 
   * A failure.
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
