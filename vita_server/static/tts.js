// The TTS box: POST /v1/audio/speech, read the streamed WAV as it arrives and play it through Web Audio.

import { audioContext, ms, Player, setStat, WavStream } from './audio.js';

const $ = (id) => document.getElementById(id);

export function setupTts(app) {
  let player = null;
  let base = { played: 0, underruns: 0 }; // the player's counters when this request began
  let asked = 0;

  const show = (p) => {
    const played = 1000 * (p.played - base.played);
    setStat('tts-played', Math.round(played), ms(played));
    setStat('tts-underruns', p.underruns - base.underruns);
  };

  $('tts-speak').addEventListener('click', async () => {
    const ctx = await audioContext();
    if (!player) {
      player = new Player(ctx, 0.15);
      player.onStats = show;
      player.onStarted = (at) => setStat('tts-first-audio', Math.round(at - asked), ms(at - asked));
      player.onDrained = (p) => {
        show(p);
        setStat('tts-state', 'played');
      };
    }
    player.begin();
    base = { played: player.played, underruns: player.underruns };
    show(player);
    setStat('tts-received', 0, ms(0)).dataset.samples = 0;
    setStat('tts-first-audio', '', '-');
    setStat('tts-state', 'requesting');
    app.clearError();
    const body = { model: app.model, input: $('tts-text').value, voice: 'default', response_format: 'wav' };
    if (app.mode()) body.mode = app.mode();
    if ($('tts-max-tokens').value) body.max_new_tokens = Number($('tts-max-tokens').value);
    if ($('tts-seed').value !== '') body.seed = Number($('tts-seed').value);
    asked = performance.now();
    try {
      const response = await fetch('/v1/audio/speech', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(await app.errorText(response));
      setStat('tts-state', 'streaming');
      const wav = new WavStream();
      const reader = response.body.getReader();
      let samples = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const chunk = wav.push(value);
        if (!chunk.length) continue;
        samples += chunk.length;
        player.push(chunk, wav.rate);
        setStat('tts-received', Math.round(1000 * samples / wav.rate), ms(1000 * samples / wav.rate)).dataset.samples = samples;
      }
      setStat('tts-state', 'playing');
      player.end(); // the player plays what is left, then reports 'drained' -> state 'played'
    } catch (err) {
      player.begin();
      setStat('tts-state', 'error');
      app.showError(err.message);
    }
  });
}
