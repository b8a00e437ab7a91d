"""Plain Django views. ``announce`` shows HTTP code talking to WebSocket clients: it sends to a
room's group through the channel layer, and the consumers pass it on."""

import json

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


async def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        "Chat rooms are at ws://<host>/ws/chat/<room>/\n", content_type="text/plain"
    )


@csrf_exempt
@require_POST
async def announce(request: HttpRequest, room_name: str) -> JsonResponse:
    message = json.loads(request.body)["message"]
    await get_channel_layer().group_send(
        f"chat_{room_name}", {"type": "chat.message", "message": f"[announcement] {message}"}
    )
    return JsonResponse({"room": room_name, "sent": message})
