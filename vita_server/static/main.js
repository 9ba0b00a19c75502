// vita's browser client: finds the served model, then wires the TTS box and the conversation panel.

import { setStat } from './audio.js';
import { setupTalk } from './talk.js';
import { setupTts } from './tts.js';

const $ = (id) => document.getElementById(id);
const modeListeners = [];

const app = {
  model: '',
  mode: () => $('mode').value, // '' leaves the model's own schedule
  onModeChange: (fn) => modeListeners.push(fn),
  showError: (message) => setStat('error', message),
  clearError: () => setStat('error', ''),
  async errorText(response) {
    // The server's one-line message from OpenAI's error JSON, or the status when there is none.
    try {
      return (await response.json()).error.message;
    } catch {
      return `${response.status} ${response.statusText}`;
    }
  },
};

$('mode').addEventListener('change', () => modeListeners.forEach((fn) => fn()));

async function start() {
  const response = await fetch('/v1/models');
  if (!response.ok) throw new Error(await app.errorText(response));
  app.model = (await response.json()).data[0].id;
  setStat('model', app.model);
  setupTts(app);
  setupTalk(app);
}

start().catch((err) => app.showError(`cannot reach the server: ${err.message}`));
