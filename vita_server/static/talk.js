// The voice conversation: the microphone over the OpenAI Realtime WebSocket protocol at /v1/realtime,
// the answer played through a jitter buffer, the transcript, and vita chat's per-turn latency panel.

import { audioContext, base64ToBytes, bytesToBase64, microphone, ms, pcm16ToFloat, Player, setStat } from './audio.js';

const $ = (id) => document.getElementById(id);
const INPUT_RATE = 24000; // the Realtime protocol's pcm16: 24 kHz mono, little-endian
const CHUNK = 960; // 40 ms of microphone per input_audio_buffer.append
const STAGES = ['audio_encoded', 'first_text_token', 'first_audio_codes', 'first_sound_out'];
const COLUMNS = ['turn', 'spoke', ...STAGES, 'first_heard', 'underruns', 'answer'];

function stagesOf(response) {
  // vita's stage timings: response.done's response.vita_timings, {audio_encoded_ms, ...} (null where not reached).
  const timings = response?.vita_timings || {};
  return Object.fromEntries(STAGES.map((k) => [k, timings[`${k}_ms`] ?? null]));
}

export function setupTalk(app) {
  let ws = null;
  let stopMic = null;
  let player = null;
  let held = false;
  let sent = 0; // microphone samples sent
  let outputRate = INPUT_RATE;
  let received = 0; // answer samples received
  const turns = [];
  let answering = null; // the turn whose response is streaming
  let heardUser = null; // the user's paragraph of the current turn
  let speechStart = 0; // input_audio_buffer.speech_started's audio_start_ms
  let serverMode = null; // the session's mode as the server opened it: what "model default" goes back to

  const vad = () => document.querySelector('input[name=turns]:checked').value === 'vad';
  const send = (event) => ws && ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(event));
  const state = (s) => setStat('talk-state', s);
  const line = (who, text) => {
    const p = document.createElement('p');
    p.className = who;
    p.textContent = text;
    $('transcript').append(p);
    $('transcript').scrollTop = $('transcript').scrollHeight;
    return p;
  };

  function sessionUpdate() {
    const session = {
      modalities: ['text', 'audio'], voice: 'default', input_audio_format: 'pcm16', output_audio_format: 'pcm16',
      turn_detection: vad() ? { type: 'server_vad', create_response: true } : null,
    };
    const budget = $('talk-max-tokens').value;
    session.max_response_output_tokens = budget ? Number(budget) : 'inf';
    const mode = app.mode() || serverMode;
    if (mode) session.mode = mode;
    send({ type: 'session.update', session });
  }

  function newTurn(spokeSeconds) {
    const turn = { index: turns.length + 1, spoke: Math.round(100 * spokeSeconds) / 100, endAt: performance.now(), stages: {}, heard: null,
                   underrunsAtStart: player.underruns, underruns: null, answer: null, status: '', drained: false };
    turn.row = document.createElement('tr');
    turn.row.dataset.turn = turn.index;
    for (const key of COLUMNS) {
      const td = document.createElement('td');
      td.dataset.key = key;
      turn.row.append(td);
    }
    $('latency').tBodies[0].append(turn.row);
    turns.push(turn);
    render(turn);
    return turn;
  }

  function render(turn) {
    const values = { turn: turn.index, spoke: turn.spoke, ...turn.stages, first_heard: turn.heard, underruns: turn.underruns };
    for (const td of turn.row.cells) {
      const key = td.dataset.key;
      const v = values[key];
      if (key === 'answer') td.textContent = turn.answer ? turn.answer.textContent : '';
      else if (v === null || v === undefined) td.textContent = '-';
      else {
        td.dataset.value = v;
        td.textContent = key === 'spoke' ? `${v.toFixed(1)} s` : key === 'turn' || key === 'underruns' ? v : ms(v);
      }
    }
    turn.row.dataset.complete = turn.drained && turn.status !== '' ? 'yes' : 'no';
    setStat('talk-turns', turns.length);
  }

  function bargeIn() {
    // The user speaks over an answer: drop what is queued (the server cancels the response).
    if (answering && !answering.drained) {
      player.begin();
      if (answering.answer) answering.answer.classList.add('interrupted');
      answering.status = answering.status || 'interrupted';
      answering.underruns = player.underruns - answering.underrunsAtStart;
      answering.drained = true;
      render(answering);
    }
  }

  function onEvent(e) {
    switch (e.type) {
      case 'session.created':
      case 'session.updated': {
        const rate = e.session?.audio?.output?.format?.rate; // the GA session shape names it; beta's pcm16 is 24 kHz
        if (rate) outputRate = rate;
        if (e.type === 'session.created') serverMode = e.session?.mode || null;
        break;
      }
      case 'input_audio_buffer.speech_started':
        bargeIn();
        speechStart = e.audio_start_ms || 0;
        heardUser = line('user', '(speaking…)');
        state('listening');
        break;
      case 'input_audio_buffer.speech_stopped':
        newTurn(((e.audio_end_ms || 0) - speechStart) / 1000);
        if (heardUser) heardUser.textContent = '(speech)';
        state('thinking');
        break;
      case 'conversation.item.input_audio_transcription.completed':
        if (heardUser) heardUser.textContent = e.transcript;
        break;
      case 'response.created': {
        const last = turns[turns.length - 1];
        const turn = last && last.answer === null ? last : newTurn(0);
        turn.responseId = e.response?.id;
        turn.answer = line('assistant', '');
        answering = turn;
        player.begin();
        state('answering');
        break;
      }
      case 'response.audio.delta':
      case 'response.output_audio.delta': {
        if (!answering || answering.drained) break;
        const samples = pcm16ToFloat(base64ToBytes(e.delta));
        received += samples.length;
        setStat('talk-received', Math.round(1000 * received / outputRate), ms(1000 * received / outputRate))
          .dataset.samples = received;
        player.push(samples, outputRate);
        break;
      }
      case 'response.audio_transcript.delta':
      case 'response.output_audio_transcript.delta':
      case 'response.text.delta':
      case 'response.output_text.delta':
        if (answering && answering.answer) {
          answering.answer.textContent += e.delta;
          render(answering);
        }
        break;
      case 'response.done': {
        const turn = turns.find((t) => t.responseId && t.responseId === e.response?.id) || answering;
        if (!turn) break;
        turn.stages = stagesOf(e.response);
        turn.status = e.response?.status || 'completed';
        if (turn.status === 'cancelled' && turn.answer) turn.answer.classList.add('interrupted');
        if (turn === answering && !turn.drained) player.end();
        render(turn);
        break;
      }
      case 'error':
        app.showError(e.error?.message || 'the server sent an error');
        break;
      default:
        break;
    }
  }

  async function connect() {
    const ctx = await audioContext();
    if (!player) {
      player = new Player(ctx, 0.12);
      player.onStats = (p) => {
        setStat('talk-played', Math.round(1000 * p.played), ms(1000 * p.played));
        setStat('talk-buffered', Math.round(1000 * p.buffered), ms(1000 * p.buffered));
        setStat('talk-underruns', p.underruns);
      };
      player.onStarted = (at) => {
        if (answering && answering.heard === null) {
          answering.heard = Math.round(10 * (at - answering.endAt)) / 10;
          render(answering);
        }
      };
      player.onDrained = (p) => {
        player.onStats(p);
        if (!answering) return;
        answering.drained = true;
        answering.underruns = p.underruns - answering.underrunsAtStart;
        render(answering);
        state('answered');
      };
    }
    app.clearError();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=${encodeURIComponent(app.model)}`);
    state('connecting');
    ws.onopen = async () => {
      sessionUpdate();
      try {
        stopMic = await microphone(ctx, INPUT_RATE, CHUNK, (buffer) => {
          if (!vad() && !held) return;
          send({ type: 'input_audio_buffer.append', audio: bytesToBase64(buffer) });
          sent += CHUNK;
          setStat('talk-sent', Math.round(1000 * sent / INPUT_RATE), ms(1000 * sent / INPUT_RATE));
        });
      } catch (err) {
        app.showError(`no microphone: ${err.message}`);
        ws.close();
        return;
      }
      $('talk-connect').textContent = 'Disconnect';
      $('talk-hold').disabled = vad();
      $('talk-stop').disabled = false;
      state('connected');
    };
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = (m) => {
      if (stopMic) stopMic();
      stopMic = null;
      ws = null;
      $('talk-connect').textContent = 'Connect';
      $('talk-hold').disabled = true;
      $('talk-stop').disabled = true;
      state('closed');
      const said = $('error').textContent; // an error event before the close says more than its code
      if (m.code !== 1000 && m.code !== 1005 && !said) app.showError(`the realtime connection closed (${m.code} ${m.reason})`);
    };
  }

  $('talk-connect').addEventListener('click', () => (ws ? ws.close(1000) : connect()));
  for (const radio of document.querySelectorAll('input[name=turns]')) {
    radio.addEventListener('change', () => {
      $('talk-hold').disabled = !ws || vad();
      sessionUpdate();
    });
  }
  app.onModeChange(sessionUpdate);
  $('talk-max-tokens').addEventListener('change', sessionUpdate);

  const hold = $('talk-hold');
  hold.addEventListener('pointerdown', () => {
    if (hold.disabled) return;
    bargeIn();
    send({ type: 'input_audio_buffer.clear' });
    held = true;
    hold.classList.add('held');
    hold.dataset.heldAt = performance.now();
    state('listening');
  });
  const release = () => {
    if (!held) return;
    held = false;
    hold.classList.remove('held');
    newTurn((performance.now() - Number(hold.dataset.heldAt)) / 1000);
    heardUser = line('user', '(speech)');
    send({ type: 'input_audio_buffer.commit' });
    send({ type: 'response.create', response: { modalities: ['text', 'audio'] } });
    state('thinking');
  };
  hold.addEventListener('pointerup', release);
  hold.addEventListener('pointerleave', release);

  $('talk-stop').addEventListener('click', () => {
    send({ type: 'response.cancel' });
    bargeIn();
  });
}
