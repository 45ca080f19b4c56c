// The console's live updates: the change stream (/console/changes, Server-Sent
// Events) names each code that changed; every element on the page showing that code
// (data-access-code-id, with data-live-url) is fetched again from the server and
// replaced. The server renders and escapes everything; this file only swaps elements.
'use strict'

;(() => {
  const status = document.getElementById('live-status')
  const say = (text) => {
    if (status) status.textContent = text
  }
  if (!('EventSource' in window)) {
    say('Live updates need a browser with EventSource; reload to see changes.')
    return
  }
  let elsewhere = 0
  // After the newest change the page was read with: none made while it loaded is missed.
  const after = document.body.dataset.changesAfter
  const source = new EventSource('/console/changes' + (after ? `?last_event_id=${encodeURIComponent(after)}` : ''))
  source.onopen = () => say('Live updates: on.')
  source.onerror = () => say('Live updates: interrupted, reconnecting…')

  async function refresh(element) {
    const response = await fetch(element.dataset.liveUrl, { credentials: 'same-origin', headers: { accept: 'text/html' } })
    if (!response.ok) return false
    const doc = new DOMParser().parseFromString(await response.text(), 'text/html')
    const fresh = doc.querySelector(`[data-live-id="${element.dataset.liveId}"]`)
    if (!fresh) return false
    const node = document.importNode(fresh, true)
    node.classList.add('just-updated')
    element.replaceWith(node)
    return true
  }

  source.onmessage = async (message) => {
    let change
    try {
      change = JSON.parse(message.data)
    } catch {
      return
    }
    const shown = [...document.querySelectorAll('[data-live-url]')].filter(
      (element) => element.dataset.accessCodeId === change.access_code_id,
    )
    if (shown.length === 0) {
      if (status && status.hasAttribute('data-live-elsewhere')) {
        elsewhere += 1
        say(`Live updates: on. ${elsewhere} change(s) to codes not on this page; reload to see them.`)
      }
      return
    }
    for (const element of shown) await refresh(element)
    const now = change.status ? `, now ${change.status}` : ''
    say(`Live updates: on. ${change.access_code_id} ${change.change}${now}.`)
  }
})()
